"""One price per symbol out of several feeds, with an outlier guard.

Rules: `primary` takes the first live feed in config order (the others are
fallbacks); `median` takes the median of the live feeds. A price further than
`max_deviation` from the median of the other live, trusted feeds is held as
suspect: it never reaches the engine, so it can never trigger a trade alone.
It is released as soon as it agrees with them again, or when it is the only
live source left.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from monitor.feeds.base import TickSink
from monitor.feeds.stats import RateLimitedLog
from monitor.model import PriceTick


@dataclass
class _Quote:
    tick: PriceTick
    seen: float  # monotonic
    suspect: bool = False


class SourceCombiner:
    def __init__(self, sources: dict[str, list[str]], live_for_s: dict[str, float], rule: str,
                 max_deviation: float, sink: TickSink, clock: Callable[[], float] = time.monotonic) -> None:
        self.sources = sources  # symbol -> feed names in priority order (only symbols with 2+ feeds)
        self._live_for_s = live_for_s  # feed -> seconds after its last tick that it still counts as live
        self.rule = rule
        self.max_deviation = max_deviation
        self._sink = sink
        self._clock = clock
        self._quotes: dict[str, dict[str, _Quote]] = {s: {} for s in sources}
        self._last_ts: dict[str, int] = {}
        self.suspect = 0  # ticks held back as outliers
        self._log = RateLimitedLog()

    def sink_for(self, feed: str) -> TickSink:
        def sink(tick: PriceTick) -> None:
            if tick.symbol in self._quotes:
                self.offer(feed, tick)
            else:
                self._sink(tick)
        return sink

    def offer(self, feed: str, tick: PriceTick) -> None:
        now = self._clock()
        quotes = self._quotes[tick.symbol]
        others = [q.tick.price for f, q in quotes.items()
                  if f != feed and not q.suspect and now - q.seen <= self._live_for_s[f]]
        q = quotes[feed] = _Quote(tick, now)
        if others:
            ref = statistics.median(others)
            if abs(tick.price / ref - 1) > self.max_deviation:
                q.suspect = True
                self.suspect += 1
                self._log("suspect price held", feed=feed, symbol=tick.symbol, price=tick.price, others=ref)
                return
        self._publish(tick.symbol, feed, now)

    def _publish(self, symbol: str, feed: str, now: float) -> None:
        quotes = self._quotes[symbol]
        live = [(f, quotes[f]) for f in self.sources[symbol]
                if f in quotes and not quotes[f].suspect and now - quotes[f].seen <= self._live_for_s[f]]
        if self.rule == "primary":
            chosen, q = live[0]
            if chosen != feed:
                return  # a fallback's tick while a higher-priority feed is live
            tick = q.tick
        else:
            ticks = [q.tick for _, q in live]
            bids = [t.bid for t in ticks if t.bid is not None and t.ask is not None]
            asks = [t.ask for t in ticks if t.bid is not None and t.ask is not None]
            bid, ask = (statistics.median(bids), statistics.median(asks)) if bids else (None, None)
            if bid is not None and not bid <= ask:
                bid = ask = None
            newest = quotes[feed].tick
            tick = PriceTick(symbol, statistics.median(t.price for t in ticks), newest.ts_ms, bid, ask,
                             newest.recv_ms)
        # feeds' clocks differ: the combined stream must not run backwards in time
        ts = max(tick.ts_ms, self._last_ts.get(symbol, tick.ts_ms))
        self._last_ts[symbol] = ts
        self._sink(tick if ts == tick.ts_ms else PriceTick(symbol, tick.price, ts, tick.bid, tick.ask, tick.recv_ms))


def build_combiner(feeds: list[tuple[str, tuple[str, ...], float]], rule: str, max_deviation: float,
                   sink: TickSink) -> SourceCombiner:
    """`feeds`: (name, symbols, stale_after_s) in config order."""
    by_symbol: dict[str, list[str]] = {}
    for name, symbols, _ in feeds:
        for s in symbols:
            by_symbol.setdefault(s, []).append(name)
    shared = {s: names for s, names in by_symbol.items() if len(names) > 1}
    return SourceCombiner(shared, {n: st for n, _, st in feeds}, rule, max_deviation, sink)
