"""Bybit v5 public tickers: where they are served, and a parser from frames to ticks.

Frames (https://bybit-exchange.github.io/docs/v5/websocket/public/ticker):
  {"topic": "tickers.BTCUSDT", "type": "snapshot" | "delta", "ts": ms, "cs": n, "data": {...}}
  linear data: "lastPrice", "markPrice", "indexPrice", "bid1Price", "ask1Price", ... (a delta
  carries only what changed, so the parser keeps each symbol's latest fields); spot data:
  "lastPrice", "usdIndexPrice", no book.
Index mode reads the linear perpetual's "indexPrice", for a spot symbol too (BTC/USDT ->
tickers.BTCUSDT on linear). Bybit values UTA collateral at a "USD Index Price" = USDT Perpetual
Index Price x a USDT conversion rate (help centre, "Understanding Collateral Value Ratios in
Unified Trading Account"): the linear index is that price in USDT, the quote our symbols are
priced in; spot's usdIndexPrice is the same index in USD, a unit no symbol of ours is quoted in.
  replies: {"success": bool, "ret_msg", "conn_id", "req_id", "op": "subscribe" | "pong" | ...}
"cs" is the cross sequence of the matching engine (v5 "Ticker"; the "Orderbook" topic carries
the same figure as data "seq", beside "u", an update id that restarts at 1 with a snapshot when
the service restarts): it orders a symbol's frames, "ts" breaking ties (a mark-price-only delta
may repeat the cs). A snapshot starts the order afresh.
Bybit drops a connection that sends no ping for a while, so the client pings every 20 s.
"""

from __future__ import annotations

import orjson

from monitor.errors import ConfigError
from monitor.feeds.base import price_source
from monitor.feeds.binance_wire import Endpoint, market_id
from monitor.feeds.stats import TickGate

BYBIT_WS = {False: "wss://stream.bybit.com", True: "wss://stream-testnet.bybit.com"}
MAX_ARGS_PER_REQUEST = 10  # Bybit's limit for spot; the same for linear keeps it simple
PING_EVERY_S = 20.0
PING = orjson.dumps({"op": "ping"})
FIELD = {"mid": None, "last": "lastPrice", "mark": "markPrice", "index": "indexPrice"}


def endpoints(symbols: dict[str, str], *, testnet: bool, ws_url: str | None, feed: str) -> list[Endpoint]:
    from monitor.feeds.ccxt_exchange import rebase

    grouped: dict[str, dict[str, tuple[str, str]]] = {}
    for symbol, mode in symbols.items():
        perp = ":" in price_source(symbol, mode)
        if not perp and mode != "last":
            raise ConfigError(f"feeds ({feed}).price: Bybit spot tickers carry only the last price; "
                              f"use price = \"last\" or \"index\" for {symbol!r}, or the ccxt driver")
        url = BYBIT_WS[testnet] + ("/v5/public/linear" if perp else "/v5/public/spot")
        if ws_url:
            url = rebase(url, ws_url)
        grouped.setdefault(url, {})[f"tickers.{market_id(symbol, feed)}"] = (symbol, mode)
    return [Endpoint(url, routes) for url, routes in grouped.items()]


def subscribe_messages(topics: list[str], first_id: int = 1) -> list[bytes]:
    return [orjson.dumps({"op": "subscribe", "args": topics[i:i + MAX_ARGS_PER_REQUEST], "req_id": str(first_id + n)})
            for n, i in enumerate(range(0, len(topics), MAX_ARGS_PER_REQUEST))]


class BybitParser:
    def __init__(self, routes: dict[str, tuple[str, str]], gate: TickGate) -> None:
        self.routes = routes
        self.gate = gate
        self._state: dict[str, dict] = {}  # topic -> the latest fields (deltas merge into it)
        self.acks = 0
        self.errors = 0
        gate.restart_sequences(s for s, _ in routes.values())  # one parser per connection

    def feed(self, raw: str | bytes, recv_ms: int) -> None:
        try:
            msg = orjson.loads(raw)
            topic = msg.get("topic")
            if topic is None:
                self._reply(msg)
                return
            route = self.routes.get(topic)
            if route is None:
                self.gate.bad("unknown topic", topic)
                return
            data = msg["data"]
            symbol, mode = route
            if msg["type"] == "snapshot":
                state = self._state[topic] = dict(data)
                self.gate.restart_sequences((symbol,))
            else:
                state = self._state.setdefault(topic, {})
                state.update(data)
            bid = ask = None
            if "bid1Price" in state and "ask1Price" in state:
                bid, ask = float(state["bid1Price"]), float(state["ask1Price"])
            if mode == "mid":
                if bid is None or ask is None:
                    raise KeyError("bid1Price/ask1Price")
                price = (bid + ask) * 0.5
            else:
                price = float(state[FIELD[mode]])
            if mode == "index":
                bid = ask = None  # an index is no book (and a spot symbol's is not its perpetual's)
            ts, seq = msg["ts"], msg.get("cs")
            if not isinstance(ts, int) or not (seq is None or isinstance(seq, int)):
                raise TypeError("ts or cs is not an integer")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            self.gate.bad(f"malformed frame ({type(err).__name__})", raw[:200])
            return
        self.gate.emit(symbol, price, ts, bid, ask, recv_ms, seq)

    def _reply(self, msg: dict) -> None:
        if msg.get("success") is True:
            self.acks += 1
        else:
            self.errors += 1
            self.gate.bad("venue rejected a request", msg)
