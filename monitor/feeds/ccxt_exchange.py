"""The one place ccxt is imported: exchanges built from a feed's settings, and
ccxt's ticker dicts turned into our prices.

Endpoint overrides keep the venue's paths and replace only scheme, host and
port, so a proxy, a regional endpoint, a relay or a local test server works
with every method ccxt knows for the venue.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
from ccxt.base.errors import BaseError, NetworkError

from monitor.errors import ConfigError

__all__ = ["INDEX_VENUES", "BaseError", "NetworkError", "make_exchange", "market_type", "rebase_urls",
           "ticker_price"]

# ccxt venues whose streams and REST tickers fill a ticker's `indexPrice` (read in ccxt 4.5.90):
# binance's USDⓈ-M markPrice stream ("i", parse_ws_ticker) and premiumIndex (parse_ticker),
# bybit's linear and inverse tickers (parse_ticker, deltas merged into the last ticker). Others
# are refused at config time rather than leaving a symbol without a price at run time.
INDEX_VENUES = frozenset({"binance", "binanceusdm", "bybit"})


def market_type(symbol: str) -> str:
    """ccxt's unified notation: BASE/QUOTE is spot; BASE/QUOTE:SETTLE a perpetual, linear when it
    settles in the quote (BTC/USDT:USDT), inverse when in the base (BTC/USD:BTC)."""
    pair, _, settle = symbol.partition(":")
    if not settle:
        return "spot"
    return "linear" if pair.endswith("/" + settle) else "inverse"


def rebase(url: str, base: str) -> str:
    """`url` with the scheme, host and port of `base` (and its path, if any, in front)."""
    u, b = urlsplit(url), urlsplit(base)
    return urlunsplit((b.scheme, b.netloc, b.path.rstrip("/") + u.path, u.query, u.fragment))


def rebase_urls(tree: Any, ws_url: str | None, rest_url: str | None) -> Any:
    """Every endpoint in a ccxt `urls['api']` tree, websocket ones onto ws_url, HTTP ones onto rest_url."""
    if isinstance(tree, dict):
        return {k: rebase_urls(v, ws_url, rest_url) for k, v in tree.items()}
    if isinstance(tree, str):
        if tree.startswith(("ws://", "wss://")) and ws_url:
            return rebase(tree, ws_url)
        if tree.startswith(("http://", "https://")) and rest_url:
            return rebase(tree, rest_url)
    return tree


def make_exchange(exchange_id: str, *, pro: bool, testnet: bool, ws_url: str | None, rest_url: str | None,
                  types: set[str], feed: str) -> Any:
    """A ccxt exchange (no I/O until first used). `types`: the market types the feed needs,
    so markets of other types are not downloaded (and ids shared by spot and swap stay unambiguous)."""
    module = ccxt_pro if pro else ccxt_async
    cls = getattr(module, exchange_id, None)
    if cls is None:
        kind = "websocket (ccxt.pro)" if pro else "REST"
        raise ConfigError(f"feeds ({feed}).exchange: {exchange_id!r} is not a ccxt exchange with {kind} support")
    exchange = cls({"enableRateLimit": True})
    if testnet:
        try:
            exchange.set_sandbox_mode(True)
        except BaseError:
            raise ConfigError(f"feeds ({feed}).testnet: {exchange_id} has no sandbox in ccxt") from None
    if ws_url or rest_url:
        exchange.urls["api"] = rebase_urls(exchange.urls["api"], ws_url, rest_url)
    if "spot" not in types:
        exchange.options["defaultType"] = "swap"
    fetch = exchange.options.get("fetchMarkets")
    if isinstance(fetch, dict) and isinstance(fetch.get("types"), list):
        # binance-style type lists: spot, linear, inverse, ...
        fetch["types"] = [t for t in fetch["types"] if t in types] or fetch["types"]
    return exchange


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def ticker_price(t: dict, mode: str) -> tuple[float, float | None, float | None] | None:
    """(price, bid, ask) of a ccxt ticker for a price mode; None when the ticker lacks it."""
    bid, ask = _finite(t.get("bid")), _finite(t.get("ask"))
    if mode == "mid":
        price = (bid + ask) / 2 if bid is not None and ask is not None else None
    elif mode == "last":
        price = _finite(t.get("last") if t.get("last") is not None else t.get("close"))
    elif mode == "mark":
        price = _finite(t.get("markPrice"))
    else:  # an index is no book, and a spot symbol's comes from its perpetual's ticker
        price, bid, ask = _finite(t.get("indexPrice")), None, None
    if price is None:
        return None
    return price, bid if ask is not None else None, ask if bid is not None else None
