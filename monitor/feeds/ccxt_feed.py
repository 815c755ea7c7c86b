"""The ccxt feed: ccxt.pro's websocket layer, for any venue ccxt supports.

ccxt.pro coalesces updates to the latest per symbol and reconnects only when
the next `watch_*` call is made, so liveness is ours: each watch group (one
batch call, one ccxt instance so its connection can be dropped alone) has a
watchdog that drops the connection when no update came for `watchdog_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from monitor.feeds.backoff import Backoff, RetryLog
from monitor.feeds.base import FeedEvent, FeedEventSink, TickSink, price_source
from monitor.feeds.ccxt_exchange import BaseError, NetworkError, market_type, ticker_price
from monitor.feeds.rest_fallback import RestFallback
from monitor.feeds.stats import DEFAULT_MAX_SKEW_MS, FeedStats, RateLimitedLog, TickGate, now_ms

log = structlog.get_logger("feed")

# price mode -> (batch method, capability flag) preferred, before the generic watch_tickers.
# Binance's mark price stream carries the index too; Bybit's tickers carry both.
BATCH = {"mid": ("watch_bids_asks", "watchBidsAsks"), "mark": ("watch_mark_prices", "watchMarkPrices"),
         "index": ("watch_mark_prices", "watchMarkPrices")}


def watch_method(exchange: Any, mode: str) -> tuple[str, bool]:
    """(method name, batched) for a price mode on this exchange."""
    preferred = BATCH.get(mode)
    if preferred and exchange.has.get(preferred[1]):
        return preferred[0], True
    if exchange.has.get("watchTickers"):
        return "watch_tickers", True
    return "watch_ticker", False


class CcxtFeed:
    def __init__(self, name: str, modes: dict[str, str], exchange_factory: Callable[[set[str]], Any], *,
                 watchdog_s: float = 15.0, backoff: Callable[[], Backoff] = lambda: Backoff(0.5, 30.0),
                 fallback: RestFallback | None = None, max_skew_s: float = DEFAULT_MAX_SKEW_MS / 1000,
                 clock_ms: Callable[[], int] = now_ms, venue: str = "") -> None:
        self.name = name
        self.modes = modes  # symbol -> mid | last | mark | index
        self.symbols: tuple[str, ...] = tuple(modes)
        # the market watched for each symbol, and back (one each: live.py refuses two symbols on one)
        self._source = {s: price_source(s, mode) for s, mode in modes.items()}
        self._ours = {src: s for s, src in self._source.items()}
        self._factory = exchange_factory  # market types -> a ccxt.pro exchange
        self.watchdog_s = watchdog_s
        self._backoff = backoff
        self._fallback = fallback
        self._max_skew_ms = round(max_skew_s * 1000)
        self._clock_ms = clock_ms  # receipt time (injected by tests)
        self.stats = FeedStats()
        self.events: FeedEventSink | None = None
        self._down: set[tuple[str, str]] = set()
        self._groups: dict[tuple[str, str], list[str]] = {}
        for s, mode in modes.items():  # one batch call per price mode and market type watched
            self._groups.setdefault((mode, market_type(self._source[s])), []).append(s)
        self._down = set(self._groups)
        self._errors = RateLimitedLog(first=5, every=100)
        self._retry_log = RetryLog(venue or name)

    def down_symbols(self) -> list[str]:
        return [s for g in self._down for s in self._groups[g]]

    async def run(self, sink: TickSink) -> None:
        gate = TickGate(self.name, self.stats, sink, self._max_skew_ms, self._clock_ms)
        async with asyncio.TaskGroup() as tg:
            for group in self._groups:
                tg.create_task(self._watch_group(group, gate))
            if self._fallback is not None:
                tg.create_task(self._fallback.run(gate, self.down_symbols))

    async def _watch_group(self, group: tuple[str, str], gate: TickGate) -> None:
        mode, mtype = group
        symbols = [self._source[s] for s in self._groups[group]]
        exchange = self._factory({mtype})
        try:
            method, batched = watch_method(exchange, mode)
            calls = [(getattr(exchange, method), symbols)] if batched else \
                [(getattr(exchange, method), s) for s in symbols]
            backoff = self._backoff()
            seen: dict[str, Any] = {}  # market -> the last ccxt ticker dict emitted (outlives reconnects)
            while True:
                reason = await self._watch_until_failure(exchange, calls, group, gate, backoff, seen)
                self._set_down(group, reason, backoff.cap_s)
                self.stats.reconnects += 1
                await asyncio.sleep(backoff.next_delay())
        finally:
            await exchange.close()

    async def _watch_until_failure(self, exchange: Any, calls: list, group: tuple[str, str], gate: TickGate,
                                   backoff: Backoff, seen: dict[str, Any]) -> str:
        mode = group[0]
        cache_name = "bidsasks" if calls[0][0].__name__ == "watch_bids_asks" else "tickers"
        pending = {asyncio.ensure_future(call(arg)): (call, arg) for call, arg in calls}
        last = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait(pending, timeout=self.watchdog_s / 4,
                                             return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    call, arg = pending.pop(fut)
                    try:
                        result = fut.result()
                    except NetworkError as err:
                        return f"{type(err).__name__}: {err}"
                    except BaseError as err:  # a venue-side refusal: retried with backoff, logged sparingly
                        self._errors("ccxt watch failed", feed=self.name, error=f"{type(err).__name__}: {err}"[:300])
                        return f"{type(err).__name__}: {err}"
                    last = time.monotonic()
                    if group in self._down:
                        self._set_up(group)
                        backoff.reset()
                    self._emit(result, mode, gate, getattr(exchange, cache_name, None) or {}, seen)
                    pending[asyncio.ensure_future(call(arg))] = (call, arg)
                if time.monotonic() - last > self.watchdog_s:
                    self.stats.watchdog_trips += 1
                    self._event("watchdog", f"no update for {self.watchdog_s:g}s")
                    return f"silent for {self.watchdog_s:g}s"
        finally:
            for fut in pending:
                fut.cancel()
            await exchange.close_ws_clients()  # the next watch call dials afresh and subscribes again
            await asyncio.gather(*pending, return_exceptions=True)

    def _emit(self, result: Any, mode: str, gate: TickGate, cache: dict, seen: dict) -> None:
        recv = gate.clock_ms()
        stats = self.stats
        stats.last_message_ms, stats.last_message_mono = recv, time.monotonic()
        tickers = list(result.values()) if isinstance(result, dict) and "symbol" not in result else [result]
        # A batch watch returns what resolved its future; updates for other symbols parsed in the
        # same read only land in ccxt's cache. Take those too (each is a new dict when updated).
        returned = {id(t) for t in tickers}
        tickers += [t for s, t in cache.items() if s in self._ours and seen.get(s) is not t and id(t) not in returned]
        for t in tickers:
            stats.messages += 1
            market = t.get("symbol") if isinstance(t, dict) else None
            symbol = self._ours.get(market)
            if symbol is None:
                gate.bad("update for a symbol not watched", market)
                continue
            seen[market] = t
            priced = ticker_price(t, mode)
            if priced is None:
                gate.bad(f"ticker without a {mode} price", symbol)
                continue
            ts = t.get("timestamp")
            ts = ts if isinstance(ts, int) and not isinstance(ts, bool) and ts > 0 else recv
            gate.emit(symbol, priced[0], ts, priced[1], priced[2], recv)

    def _set_down(self, group: tuple[str, str], reason: str, retry_s: float) -> None:
        first = group not in self._down
        self._down.add(group)
        self.stats.connected = False
        if first:
            log.warning("feed disconnected", feed=self.name, group=f"{group[0]}/{group[1]}", reason=reason[:300])
            self._event("disconnected", reason)
        else:
            self._retry_log.failed(_where(group), retry_s, reason, feed=self.name)
        if self._fallback is not None:
            self._fallback.wake.set()

    def _set_up(self, group: tuple[str, str]) -> None:
        self._down.discard(group)
        self._retry_log.reached(_where(group))
        self.stats.connected = not self._down
        log.info("feed connected", feed=self.name, group=f"{group[0]}/{group[1]}")
        self._event("connected", f"{group[0]}/{group[1]}")

    def _event(self, kind: str, detail: str) -> None:
        if self.events is not None:
            self.events(FeedEvent(self.name, kind, detail))


def _where(group: tuple[str, str]) -> str:
    return f"for {group[1]} {group[0]} prices (ccxt)"
