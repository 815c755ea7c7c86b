"""Binance's public market streams: which stream carries which price, where it
is served, and a parser from combined-stream frames straight to ticks.

Frames (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams,
.../derivatives/usds-margined-futures/websocket-market-streams):
  combined envelope  {"stream": "btcusdt@bookTicker", "data": {...}}
  bookTicker         {"u", "s", "b", "B", "a", "A"} (futures add "e", "E", "T"); "u" is the
                     order book updateId (Spot "Individual Symbol Book Ticker Streams",
                     USDⓈ-M "Individual Symbol Book Ticker Streams"): it orders a symbol's book
                     tickers where "E" is absent (spot) or may not be monotonic
  24hrTicker         {"e": "24hrTicker", "E", "s", "c" (last), "b", "a" (spot only), ...}
  markPriceUpdate    {"e": "markPriceUpdate", "E", "s", "p" (mark), "i" (index), "P", "r", "T"}
                     (USDⓈ-M "Mark Price Stream": "i" is the index, the spot price index of the
                     pair; it is also a spot symbol's index, so index mode reads a spot pair here too)
  replies            {"result": null, "id": 1} or {"error": {"code", "msg"}, "id": 1}
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from monitor.errors import ConfigError
from monitor.feeds.base import price_source
from monitor.feeds.stats import TickGate

SPOT_WS = {False: "wss://stream.binance.com:9443", True: "wss://stream.testnet.binance.vision"}
FUTURES_WS = {False: "wss://fstream.binance.com", True: "wss://fstream.binancefuture.com"}
# USDⓈ-M futures serve book tickers under /public and the other market streams under /market.
STREAM_SUFFIX = {"mid": "bookTicker", "last": "ticker", "mark": "markPrice@1s", "index": "markPrice@1s"}
MAX_STREAMS_PER_REQUEST = 200  # keep SUBSCRIBE messages small; Binance allows 1024 streams a connection

MID, LAST, MARK, INDEX = 0, 1, 2, 3
_KIND = {"mid": MID, "last": LAST, "mark": MARK, "index": INDEX}
MARK_FIELD = {MARK: "p", INDEX: "i"}  # the two prices of one markPriceUpdate


@dataclass(frozen=True)
class Endpoint:
    url: str  # the combined-stream endpoint, e.g. wss://stream.binance.com:9443/stream
    routes: dict[str, tuple[str, int]]  # stream name -> (our symbol, price kind)

    @property
    def streams(self) -> list[str]:
        return list(self.routes)


def market_id(symbol: str, feed: str) -> str:
    """BTC/USDT -> BTCUSDT (spot); BTC/USDT:USDT -> BTCUSDT (USDⓈ-M perpetual)."""
    pair, _, settle = symbol.partition(":")
    base, _, quote = pair.partition("/")
    if not base or not quote or (settle and settle != quote):
        raise ConfigError(f"feeds ({feed}).symbols: {symbol!r} is not a Binance spot (BASE/QUOTE) or "
                          "USDⓈ-M perpetual (BASE/QUOTE:QUOTE) symbol")
    return (base + quote).upper()


def endpoints(symbols: dict[str, str], *, testnet: bool, ws_url: str | None, feed: str) -> list[Endpoint]:
    """Connections needed for `symbols` (symbol -> price mode), one per endpoint URL."""
    from monitor.feeds.ccxt_exchange import rebase  # pure URL helper

    grouped: dict[str, dict[str, tuple[str, int]]] = {}
    for symbol, mode in symbols.items():
        perp = ":" in price_source(symbol, mode)  # index: a spot pair's comes from USDⓈ-M
        if mode == "mark" and not perp:
            raise ConfigError(f"feeds ({feed}).price: mark prices exist only for perpetuals, not {symbol!r}")
        if perp:
            url = FUTURES_WS[testnet] + ("/public/stream" if mode == "mid" else "/market/stream")
        else:
            url = SPOT_WS[testnet] + "/stream"
        if ws_url:
            url = rebase(url, ws_url)
        stream = f"{market_id(symbol, feed).lower()}@{STREAM_SUFFIX[mode]}"
        grouped.setdefault(url, {})[stream] = (symbol, _KIND[mode])
    return [Endpoint(url, routes) for url, routes in grouped.items()]


def subscribe_messages(streams: list[str], first_id: int = 1) -> list[bytes]:
    return [orjson.dumps({"method": "SUBSCRIBE", "params": streams[i:i + MAX_STREAMS_PER_REQUEST],
                          "id": first_id + n})
            for n, i in enumerate(range(0, len(streams), MAX_STREAMS_PER_REQUEST))]


class BinanceParser:
    """Frame -> tick for one connection; anything unexpected is counted and skipped."""

    def __init__(self, routes: dict[str, tuple[str, int]], gate: TickGate) -> None:
        self.routes = routes
        self.gate = gate
        self.acks = 0
        self.errors = 0
        gate.restart_sequences(s for s, _ in routes.values())  # one parser per connection

    def feed(self, raw: str | bytes, recv_ms: int) -> None:
        seq = None
        try:
            msg = orjson.loads(raw)
            route = self.routes.get(msg["stream"])
            if route is None:
                self.gate.bad("unknown stream", msg["stream"])
                return
            data = msg["data"]
            symbol, kind = route
            if kind == MID:
                bid, ask = float(data["b"]), float(data["a"])
                price = (bid + ask) * 0.5
                seq = data.get("u")
                if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
                    raise TypeError("u is not an integer")
            elif kind in MARK_FIELD:  # neither the mark nor the index is a book: no bid/ask
                bid = ask = None
                price = float(data[MARK_FIELD[kind]])
            else:
                price = float(data["c"])
                bid, ask = (float(data["b"]), float(data["a"])) if "b" in data and "a" in data else (None, None)
            ts = data.get("E", recv_ms)
            if not isinstance(ts, int):
                raise TypeError("E is not an integer")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            self._reply_or_bad(raw, err)
            return
        self.gate.emit(symbol, price, ts, bid, ask, recv_ms, seq)

    def _reply_or_bad(self, raw: str | bytes, err: Exception) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            msg = None
        if isinstance(msg, dict) and "id" in msg and ("result" in msg or "error" in msg):
            if "error" in msg:
                self.errors += 1
                self.gate.bad("venue rejected a request", msg["error"])
            else:
                self.acks += 1
            return
        self.gate.bad(f"malformed frame ({type(err).__name__})", raw[:200])
