"""REST polling through ccxt while a feed's socket is down.

Prices keep coming (slower) during a reconnect storm, so accounts do not go
blind for as long as the venue's REST API still answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from monitor.feeds.base import price_source
from monitor.feeds.ccxt_exchange import BaseError, market_type, ticker_price
from monitor.feeds.stats import RateLimitedLog, TickGate

log = structlog.get_logger("feed")


class RestFallback:
    """Polls `fetch_tickers` (or `fetch_mark_prices` for mark and index prices: Binance's
    premiumIndex has both, its tickers neither) every `interval_s` for the symbols `down()`
    names, while it names any. A spot symbol's index is polled on its perpetual."""

    def __init__(self, exchange_factory: Callable[[], Any], modes: dict[str, str], interval_s: float,
                 wake: asyncio.Event) -> None:
        self._factory = exchange_factory
        self._modes = modes  # symbol -> mid | last | mark | index
        self._source = {s: price_source(s, mode) for s, mode in modes.items()}  # the market polled
        self.interval_s = interval_s
        self.wake = wake  # set by the feed when a connection goes down
        self._errors = RateLimitedLog(first=3, every=100)

    async def run(self, gate: TickGate, down: Callable[[], list[str]]) -> None:
        exchange = None
        try:
            while True:
                symbols = down()
                if not symbols:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                exchange = exchange or self._factory()
                await self._poll(exchange, gate, symbols)
                await asyncio.sleep(self.interval_s)
        finally:
            if exchange is not None:
                await exchange.close()

    async def _poll(self, exchange: Any, gate: TickGate, symbols: list[str]) -> None:
        groups: dict[tuple[str, bool], list[str]] = {}
        for s in symbols:  # one request per market type (venues reject mixed batches)
            mark = self._modes[s] in ("mark", "index") and bool(exchange.has.get("fetchMarkPrices"))
            groups.setdefault((market_type(self._source[s]), mark), []).append(s)
        for (_, mark), batch in groups.items():
            gate.stats.rest_polls += 1
            markets = [self._source[s] for s in batch]
            try:
                tickers = await (exchange.fetch_mark_prices(markets) if mark else exchange.fetch_tickers(markets))
            except (BaseError, OSError, asyncio.TimeoutError) as err:
                self._errors("REST fallback failed", feed=gate.feed, error=f"{type(err).__name__}: {err}"[:300])
                continue
            recv = gate.clock_ms()
            for symbol in batch:
                t = tickers.get(self._source[symbol])
                priced = ticker_price(t, self._modes[symbol]) if isinstance(t, dict) else None
                if priced is None:
                    gate.bad("REST ticker without the configured price", symbol)
                    continue
                ts = t.get("timestamp")
                gate.emit(symbol, priced[0], ts if isinstance(ts, int) else recv, priced[1], priced[2], recv)
