"""A local server speaking Binance's public market-data wire formats, for tests and benchmarks.

Websocket: raw streams (`/ws`, `/ws/<n>`, `/public/ws/<n>`, `/market/ws/<n>`, as ccxt
dials them) and combined streams (`/stream`, `/public/stream`, `/market/stream`,
optionally `?streams=a/b`), with the live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS
requests and their `{"result": ..., "id": n}` replies. Combined connections get
`{"stream", "data"}` envelopes, raw ones the bare payload.
REST: spot and USDⓈ-M `exchangeInfo`, `ticker/24hr`, `ticker/bookTicker` and
`premiumIndex`, enough for ccxt to load markets and poll tickers.
Payload shapes follow the recorded frames in shared/data/ws_captures, and the venue's docs:
markPriceUpdate ("p" mark, "i" index, "P" estimated settle price, "r", "T"):
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Mark-Price-Stream
premiumIndex ("markPrice", "indexPrice", ...):
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Mark-Price
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import WSMsgType, web

from tests.loopback import LoopbackServer


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fmt(x: float) -> str:
    return f"{x:.8f}"


def book_ticker(symbol_id: str, bid: float, ask: float, *, futures: bool = False, update_id: int = 1,
                event_ms: int | None = None) -> dict:
    data = {"u": update_id, "s": symbol_id, "b": _fmt(bid), "B": "1.50000000", "a": _fmt(ask), "A": "2.00000000"}
    if futures:  # USDⓈ-M book tickers carry the event type and times; spot's do not
        ts = event_ms or now_ms()
        data = {"e": "bookTicker", **data, "T": ts - 4, "E": ts}
    return data


def ticker_24hr(symbol_id: str, last: float, bid: float, ask: float, event_ms: int | None = None) -> dict:
    ts = event_ms or now_ms()
    return {"e": "24hrTicker", "E": ts, "s": symbol_id, "p": "0.00", "P": "0.000", "w": _fmt(last),
            "x": _fmt(last), "c": _fmt(last), "Q": "0.01000000", "b": _fmt(bid), "B": "1.00000000",
            "a": _fmt(ask), "A": "1.00000000", "o": _fmt(last), "h": _fmt(last * 1.01), "l": _fmt(last * 0.99),
            "v": "1000.00000000", "q": _fmt(last * 1000), "O": ts - 86_400_000, "C": ts, "F": 1, "L": 1000,
            "n": 1000}


def mark_price(symbol_id: str, mark: float, event_ms: int | None = None, index: float | None = None) -> dict:
    """`index` ("i") defaults to a hair under the mark, so a test tells the two apart."""
    ts = event_ms or now_ms()
    return {"e": "markPriceUpdate", "E": ts, "s": symbol_id, "p": _fmt(mark), "P": _fmt(mark),
            "i": _fmt(mark * 0.9999 if index is None else index), "r": "0.00010000",
            "T": (ts // 28_800_000 + 1) * 28_800_000}


def spot_symbol_info(base: str, quote: str) -> dict:
    return {"symbol": base + quote, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
            "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True,
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
                         "tickSize": "0.01000000"},
                        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
                         "stepSize": "0.00001000"},
                        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5}],
            "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]}


def perp_symbol_info(base: str, quote: str) -> dict:
    return {"symbol": base + quote, "pair": base + quote, "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "baseAsset": base,
            "quoteAsset": quote, "marginAsset": quote, "pricePrecision": 2, "quantityPrecision": 3,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": ["PoW"],
            "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764",
                         "tickSize": "0.10"},
                        {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
                        {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "maxQty": "120", "minQty": "0.001"},
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MIN_NOTIONAL", "notional": "100"},
                        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                         "multiplierDecimal": "4"}],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET"], "timeInForce": ["GTC", "IOC", "FOK", "GTX"]}


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    combined: bool
    streams: set[str] = field(default_factory=set)


class BinanceServer(LoopbackServer):
    """Start with `await server.start()`; `ws_url` / `rest_url` are the bases to point a feed at."""

    def __init__(self, pairs: list[tuple[str, str]] = (("BTC", "USDT"), ("ETH", "USDT"))) -> None:
        self.pairs = list(pairs)
        self.connections: list[Connection] = []
        self.connects = 0  # websocket connections accepted, ever
        self.requests: list[dict] = []  # every JSON request received on a websocket
        self.rest_hits: dict[str, int] = {}
        self.tickers: dict[str, dict] = {}  # symbol id -> {"last", "bid", "ask", "mark", "index"} for REST
        self.rest_ok = True
        self.ws_ok = True  # False: websocket upgrades are refused (503), as during a venue outage
        self._changed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v3/exchangeInfo", self._spot_info)
        app.router.add_get("/fapi/v1/exchangeInfo", self._perp_info)
        app.router.add_get("/api/v3/ticker/24hr", self._spot_24hr)
        app.router.add_get("/api/v3/ticker/bookTicker", self._spot_book)
        app.router.add_get("/fapi/v1/premiumIndex", self._premium_index)
        app.router.add_get("/{path:.*}", self._websocket)
        await self.serve(app)

    async def stop(self) -> None:
        await self.drop_all()
        await self.shut()

    # -- what tests do -----------------------------------------------------------------
    async def wait_until(self, predicate, timeout: float = 10.0) -> None:
        async def loop():
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)

    def subscribers(self, stream: str) -> int:
        return sum(stream in c.streams for c in self.connections)

    async def wait_subscribed(self, stream: str, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: self.subscribers(stream) > 0, timeout)

    async def publish(self, stream: str, data: dict) -> int:
        """Sends one event to every connection subscribed to `stream`; returns how many got it."""
        sent = 0
        for c in list(self.connections):
            if stream in c.streams and not c.ws.closed:
                body = {"stream": stream, "data": data} if c.combined else data
                await c.ws.send_str(orjson.dumps(body).decode())
                sent += 1
        return sent

    async def send_raw(self, text: str) -> None:
        for c in list(self.connections):
            if not c.ws.closed:
                await c.ws.send_str(text)

    async def drop_all(self) -> None:
        """The venue drops every connection (as on a restart or a 24-hour limit)."""
        for c in list(self.connections):
            await c.ws.close(code=1001, message=b"going away")

    def note_ticker(self, symbol_id: str, **prices: float) -> None:
        self.tickers.setdefault(symbol_id, {}).update(prices)

    # -- websocket ---------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if not (path.endswith("/stream") or "/ws" in path):
            raise web.HTTPNotFound()
        if not self.ws_ok:
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        conn = Connection(ws, combined=path.endswith("/stream"))
        if request.query.get("streams"):
            conn.streams.update(request.query["streams"].split("/"))
        self.connections.append(conn)
        self.connects += 1
        self._changed.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._request(conn, msg.data)
        finally:
            self.connections.remove(conn)
            self._changed.set()
        return ws

    async def _request(self, conn: Connection, text: str) -> None:
        try:
            req = orjson.loads(text)
            method, rid = req["method"], req["id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await conn.ws.send_str('{"error":{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}}')
            return
        self.requests.append(req)
        params = req.get("params") or []
        if method == "SUBSCRIBE":
            conn.streams.update(params)
            reply = {"result": None, "id": rid}
        elif method == "UNSUBSCRIBE":
            conn.streams.difference_update(params)
            reply = {"result": None, "id": rid}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": sorted(conn.streams), "id": rid}
        else:
            reply = {"error": {"code": 2, "msg": f"Invalid request: unknown variant `{method}`"}, "id": rid}
        await conn.ws.send_str(orjson.dumps(reply).decode())
        self._changed.set()

    # -- REST --------------------------------------------------------------------------
    def _hit(self, request: web.Request) -> None:
        self.rest_hits[request.path] = self.rest_hits.get(request.path, 0) + 1
        self._changed.set()
        if not self.rest_ok:
            raise web.HTTPServiceUnavailable()

    async def _spot_info(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.json_response({"timezone": "UTC", "serverTime": now_ms(), "rateLimits": [], "exchangeFilters": [],
                                  "symbols": [spot_symbol_info(b, q) for b, q in self.pairs]})

    async def _perp_info(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.json_response({"timezone": "UTC", "serverTime": now_ms(), "futuresType": "U_MARGINED",
                                  "rateLimits": [], "exchangeFilters": [], "assets": [],
                                  "symbols": [perp_symbol_info(b, q) for b, q in self.pairs]})

    def _wanted(self, request: web.Request) -> list[str]:
        if "symbols" in request.query:
            return orjson.loads(request.query["symbols"])
        if "symbol" in request.query:
            return [request.query["symbol"]]
        return list(self.tickers)

    async def _spot_24hr(self, request: web.Request) -> web.Response:
        self._hit(request)
        out = []
        for sid in self._wanted(request):
            t = self.tickers.get(sid)
            if t:
                d = ticker_24hr(sid, t["last"], t["bid"], t["ask"])
                out.append({"symbol": sid, "priceChange": d["p"], "priceChangePercent": d["P"],
                            "weightedAvgPrice": d["w"], "prevClosePrice": d["x"], "lastPrice": d["c"],
                            "lastQty": d["Q"], "bidPrice": d["b"], "bidQty": d["B"], "askPrice": d["a"],
                            "askQty": d["A"], "openPrice": d["o"], "highPrice": d["h"], "lowPrice": d["l"],
                            "volume": d["v"], "quoteVolume": d["q"], "openTime": d["O"], "closeTime": d["C"],
                            "firstId": 1, "lastId": 1000, "count": 1000})
        return web.json_response(out)

    async def _spot_book(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.json_response([{"symbol": sid, "bidPrice": _fmt(t["bid"]), "bidQty": "1.0", "askPrice": _fmt(t["ask"]),
                                   "askQty": "1.0"} for sid in self._wanted(request) if (t := self.tickers.get(sid))])

    async def _premium_index(self, request: web.Request) -> web.Response:
        self._hit(request)
        ts = now_ms()
        return web.json_response([{"symbol": sid, "markPrice": _fmt(t["mark"]),
                                   "indexPrice": _fmt(t.get("index", t["mark"])),
                                   "estimatedSettlePrice": _fmt(t["mark"]), "lastFundingRate": "0.00010000",
                                   "interestRate": "0.00010000", "nextFundingTime": (ts // 28_800_000 + 1) * 28_800_000,
                                   "time": ts} for sid, t in self.tickers.items() if "mark" in t])
