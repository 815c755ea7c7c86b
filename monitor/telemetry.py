"""Cheap counters the hot paths update and the metrics endpoint reads at scrape time.

The tick path pays one `bisect` and two additions per observation; nothing here
allocates per tick or knows about Prometheus.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable

# Seconds; the engine handles a tick in tens of microseconds, a large book's in milliseconds.
TICK_BUCKETS_S = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)


class LatencyHistogram:
    """Counts of observations per bucket (the last slot is +Inf), their sum and count."""

    def __init__(self, bounds: tuple[float, ...] = TICK_BUCKETS_S):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs in Prometheus' order, ending with +Inf."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class TickRate:
    """Events per second over the last `window_s` whole seconds (per-second slots in a ring)."""

    def __init__(self, window_s: int = 10, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._slots = [0] * (window_s + 1)
        self._second = [-1] * (window_s + 1)
        self.total = 0
        self._first: int | None = None  # the first second with an event: a young feed's window is shorter

    def observe(self) -> None:
        sec = int(self._clock())
        if self._first is None:
            self._first = sec
        pos = sec % len(self._slots)
        if self._second[pos] != sec:
            self._second[pos], self._slots[pos] = sec, 0
        self._slots[pos] += 1
        self.total += 1

    def per_second(self) -> float:
        """Over the last complete seconds; the one in progress is left out (it is partial)."""
        now = int(self._clock())
        span = min(self.window_s, now - self._first) if self._first is not None else 0
        if span <= 0:
            return 0.0
        recent = sum(n for s, n in zip(self._second, self._slots) if now - span <= s < now)
        return recent / span


class LoopLagProbe:
    """How late the event loop wakes a sleeper: a blocked loop delays risk and every reply."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.lag_s = 0.0
        self.max_lag_s = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            self.lag_s = max(0.0, loop.time() - start - self.interval_s)
            self.max_lag_s = max(self.max_lag_s, self.lag_s)
