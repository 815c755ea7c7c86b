"""Reconnect delays (exponential with full jitter, reset after a healthy connection), and
the log line of a venue that cannot be reached."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("feed")


class Backoff:
    def __init__(self, first_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.first_s, self.max_s = first_s, max(max_s, first_s)
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def cap_s(self) -> float:
        """The longest the next delay can be."""
        return min(self.max_s, self.first_s * 2 ** self._attempt)

    def next_delay(self) -> float:
        """Uniform in [first/2, cap]: many clients never retry in lock-step after a venue outage."""
        cap = self.cap_s
        self._attempt += 1
        return self._rng.uniform(min(self.first_s / 2, cap), cap)

    def reset(self) -> None:
        self._attempt = 0


class RetryLog:
    """"cannot reach binance at wss://...: retrying every 30 s": one line at the first failure,
    then one every `every_s` while it keeps failing, with the attempts counted. Never a line
    per attempt, never silence after a few."""

    def __init__(self, venue: str, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.venue, self.every_s, self._clock = venue, every_s, clock
        self._failing: dict[str, tuple[int, float]] = {}  # where -> (attempts, when last logged)

    def failed(self, where: str, retry_s: float, reason: str, **kw: object) -> None:
        attempts, logged = self._failing.get(where, (0, -math.inf))
        now = self._clock()
        if now - logged >= self.every_s:
            log.warning(f"cannot reach {self.venue} {where}: retrying every {retry_s:.3g} s", attempts=attempts + 1,
                        reason=reason[:300], **kw)
            logged = now
        self._failing[where] = (attempts + 1, logged)

    def reached(self, where: str) -> None:
        self._failing.pop(where, None)
