"""Live feeds (ccxt, native) built from a [[feeds]] section."""

from __future__ import annotations

import asyncio
from functools import partial

from monitor.config import FeedSettings
from monitor.feeds import binance_wire, bybit_wire
from monitor.feeds.backoff import Backoff
from monitor.feeds.base import PriceFeed
from monitor.feeds.ccxt_exchange import make_exchange, market_type
from monitor.feeds.ccxt_feed import CcxtFeed
from monitor.feeds.native import NativeFeed
from monitor.feeds.rest_fallback import RestFallback


def price_modes(fs: FeedSettings) -> dict[str, str]:
    """symbol -> price mode; venues liquidate perpetuals on mark price, so that is their default."""
    return {s: fs.price or ("mid" if market_type(s) == "spot" else "mark") for s in fs.symbols}


def build_live_feed(fs: FeedSettings) -> PriceFeed:
    modes = price_modes(fs)
    exchange = partial(make_exchange, fs.exchange, testnet=fs.testnet, ws_url=fs.ws_url, rest_url=fs.rest_url,
                       feed=fs.name)
    types = {market_type(s) for s in modes}
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
