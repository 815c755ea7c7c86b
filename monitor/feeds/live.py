"""Live feeds (ccxt, native) built from a [[feeds]] section."""

from __future__ import annotations

import asyncio
from functools import partial

from monitor.config import FeedSettings
from monitor.errors import ConfigError
from monitor.feeds import binance_wire, bybit_wire
from monitor.feeds.backoff import Backoff
from monitor.feeds.base import PriceFeed, price_source
from monitor.feeds.ccxt_exchange import INDEX_VENUES, make_exchange, market_type
from monitor.feeds.ccxt_feed import CcxtFeed
from monitor.feeds.native import NativeFeed
from monitor.feeds.rest_fallback import RestFallback


def price_modes(fs: FeedSettings) -> dict[str, str]:
    """symbol -> price mode; venues liquidate perpetuals on mark price, so that is their default."""
    return {s: fs.price or ("mid" if market_type(s) == "spot" else "mark") for s in fs.symbols}


def check_sources(fs: FeedSettings, modes: dict[str, str]) -> None:
    """At config time, in one line: an index the driver cannot read, or two symbols on one index."""
    by_source: dict[str, str] = {}
    for symbol, mode in modes.items():
        if mode == "index" and fs.driver == "ccxt" and fs.exchange not in INDEX_VENUES:
            raise ConfigError(f"feeds ({fs.name}).price: ccxt gives no index price of {fs.exchange} for {symbol!r} "
                              f"(index prices: {', '.join(sorted(INDEX_VENUES))})")
        source = price_source(symbol, mode)
        if source in by_source:  # one stream, one price: the same number twice
            raise ConfigError(f"feeds ({fs.name}).symbols: {by_source[source]!r} and {symbol!r} have the same index "
                              f"({source}); list one and price both assets by it")
        by_source[source] = symbol


def build_live_feed(fs: FeedSettings) -> PriceFeed:
    modes = price_modes(fs)
    check_sources(fs, modes)
    exchange = partial(make_exchange, fs.exchange, testnet=fs.testnet, ws_url=fs.ws_url, rest_url=fs.rest_url,
                       feed=fs.name)
    types = {market_type(price_source(s, m)) for s, m in modes.items()}  # the markets watched
    exchange(pro=fs.driver == "ccxt", types=types)  # fail now, in one line, on an unknown venue or sandbox
    fallback = None
    if fs.rest_poll_s > 0:
        fallback = RestFallback(partial(exchange, pro=False, types=types), modes, fs.rest_poll_s, asyncio.Event())
    backoff = partial(Backoff, fs.backoff_s, fs.backoff_max_s)
    if fs.driver == "native":
        wire = bybit_wire if fs.exchange == "bybit" else binance_wire
        eps = wire.endpoints(modes, testnet=fs.testnet, ws_url=fs.ws_url, feed=fs.name)
        return NativeFeed(fs.name, eps, venue=fs.exchange, client=fs.client, watchdog_s=fs.watchdog_s,
                          backoff=backoff, fallback=fallback, max_skew_s=fs.max_clock_skew_s)
    return CcxtFeed(fs.name, modes, lambda t: exchange(pro=True, types=t), watchdog_s=fs.watchdog_s,
                    backoff=backoff, fallback=fallback, max_skew_s=fs.max_clock_skew_s, venue=fs.exchange)
