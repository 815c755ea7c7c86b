"""Per-feed counters and the one gate every live tick passes through.

The counters are plain attributes so a metrics layer can read them at scrape
time without the feed knowing about it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from monitor.feeds.base import TickSink
from monitor.model import PriceTick

log = structlog.get_logger("feed")


@dataclass
class FeedStats:
    messages: int = 0  # frames (native) or updates (ccxt) received, good or bad
    ticks: int = 0  # ticks handed to the engine
    bad_frames: int = 0  # malformed frames, non-finite / zero / negative / crossed prices
    out_of_order: int = 0  # ticks older than the newest one already sent for their symbol
    reconnects: int = 0
    watchdog_trips: int = 0  # connections dropped because they went silent
    rest_polls: int = 0  # REST fallback requests made while the socket was down
    connected: bool = False
    last_message_ms: int | None = None  # wall clock of the last frame received
    last_message_mono: float = field(default=-math.inf)  # monotonic twin, for the watchdog


class RateLimitedLog:
    """Logs the first few occurrences, then one in `every`: counted always, logged sparingly."""

    def __init__(self, first: int = 10, every: int = 1000) -> None:
        self.first, self.every, self.count = first, every, 0

    def __call__(self, event: str, **kw: object) -> None:
        self.count += 1
        if self.count <= self.first or self.count % self.every == 0:
            log.warning(event, occurrences=self.count, **kw)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


DEFAULT_MAX_SKEW_MS = 2_000  # FeedSettings.max_clock_skew_s


class TickGate:
    """Validates, orders and counts ticks of one feed before they reach the sink.

    A live tick's time is checked against our clock at receipt (`recv_ms`, read from
    `clock_ms`): replayed and simulated prices never pass through a gate. Per symbol, a
    tick is older than the last one sent when the venue's sequence number says so (both
    carry one, in the same session), else when its timestamp does.
    """

    def __init__(self, feed: str, stats: FeedStats, sink: TickSink, max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
                 clock_ms: Callable[[], int] = now_ms) -> None:
        self.feed = feed
        self.stats = stats
        self.sink = sink
        self.max_skew_ms = max_skew_ms
        self.clock_ms = clock_ms  # the feeds' receipt clock
        self._last: dict[str, tuple[int, int | None]] = {}  # symbol -> (ts_ms, seq) of the last tick sent
        self._bad_log = RateLimitedLog()
        self._order_log = RateLimitedLog()

    def bad(self, reason: str, sample: object = None) -> None:
        self.stats.bad_frames += 1
        self._bad_log("bad frame skipped", feed=self.feed, reason=reason,
                      sample=None if sample is None else str(sample)[:200])

    def restart_sequences(self, symbols: Iterable[str]) -> None:
        """A new connection or a venue snapshot: sequence numbers may start over, so the next
        tick of each symbol is ordered by time."""
        for s in symbols:
            if s in self._last:
                self._last[s] = (self._last[s][0], None)

    def emit(self, symbol: str, price: float, ts_ms: int, bid: float | None, ask: float | None,
             recv_ms: int, seq: int | None = None) -> None:
        if not 0 < price < math.inf or (bid is not None and ask is not None and not 0 < bid <= ask < math.inf):
            self.bad("price not positive and finite, or bid/ask crossed", f"{symbol} {price} {bid} {ask}")
            return
        if ts_ms > recv_ms + self.max_skew_ms:
            # Its time would become event time: every true tick of the symbol after it would look
            # old, and alerts would carry a time from the future. Never counted as a price.
            self.bad("timestamp ahead of our clock by more than max_clock_skew_s (check NTP)",
                     f"{symbol} ts {ts_ms} received {recv_ms} ({(ts_ms - recv_ms) / 1000:+.3f} s)")
            return
        last = self._last.get(symbol)
        if last is not None:
            last_ts, last_seq = last
            if seq is not None and last_seq is not None:
                older = seq < last_seq or (seq == last_seq and ts_ms < last_ts)
                ts_ms = max(ts_ms, last_ts)  # newer by sequence: never earlier in event time
            else:
                older = ts_ms < last_ts
            if older:
                self.stats.out_of_order += 1
                self._order_log("older tick skipped", feed=self.feed, symbol=symbol, ts_ms=ts_ms, newest_ms=last_ts,
                                seq=seq, newest_seq=last_seq)
                return
        self._last[symbol] = (ts_ms, seq)
        self.stats.ticks += 1
        self.sink(PriceTick(symbol, price, ts_ms, bid, ask, recv_ms))
