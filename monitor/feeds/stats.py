"""Per-feed counters and the one gate every live tick passes through.

The counters are plain attributes so a metrics layer can read them at scrape
time without the feed knowing about it.
"""

from __future__ import annotations

import math
import time
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


MAX_FUTURE_MS = 60_000  # venue clocks and ours may disagree by seconds, not by a minute


class TickGate:
    """Validates, orders and counts ticks of one feed before they reach the sink."""

    def __init__(self, feed: str, stats: FeedStats, sink: TickSink) -> None:
        self.feed = feed
        self.stats = stats
        self.sink = sink
        self._last_ts: dict[str, int] = {}
        self._bad_log = RateLimitedLog()
        self._order_log = RateLimitedLog()

    def bad(self, reason: str, sample: object = None) -> None:
        self.stats.bad_frames += 1
        self._bad_log("bad frame skipped", feed=self.feed, reason=reason,
                      sample=None if sample is None else str(sample)[:200])

    def emit(self, symbol: str, price: float, ts_ms: int, bid: float | None, ask: float | None,
             recv_ms: int) -> None:
        if not 0 < price < math.inf or (bid is not None and ask is not None and not 0 < bid <= ask < math.inf):
            self.bad("price not positive and finite, or bid/ask crossed", f"{symbol} {price} {bid} {ask}")
            return
        if ts_ms > recv_ms + MAX_FUTURE_MS:
            # One tick from the future would move event time ahead for good: every other asset
            # would look stale, and every true tick of this symbol would look old.
            self.bad("timestamp ahead of our clock", f"{symbol} ts {ts_ms} received {recv_ms}")
            return
        last = self._last_ts.get(symbol)
        if last is not None and ts_ms < last:
            self.stats.out_of_order += 1
            self._order_log("older tick skipped", feed=self.feed, symbol=symbol, ts_ms=ts_ms, newest_ms=last)
            return
        self._last_ts[symbol] = ts_ms
        self.stats.ticks += 1
        self.sink(PriceTick(symbol, price, ts_ms, bid, ask, recv_ms))
