"""A local server speaking Bybit v5's public wire formats, for tests.

Websocket `/v5/public/{spot,linear}`: `{"op": "subscribe", "args": [...], "req_id"}` with
its `{"success": true, "op": "subscribe", ...}` reply, `{"op": "ping"}` / pong, and
`tickers.<SYMBOL>` pushes as snapshot then delta. REST `/v5/market/instruments-info`
(spot and linear), enough for ccxt to load markets, and `/v5/market/tickers` (linear).
Fields: linear tickers carry "lastPrice", "markPrice", "indexPrice", "bid1Price", "ask1Price", ...;
a delta only what changed (https://bybit-exchange.github.io/docs/v5/websocket/public/ticker).
REST tickers: the same fields less "tickDirection", plus the delivery fields, in
{"retCode", "retMsg", "result": {"category", "list"}, "retExtInfo", "time"}
(https://bybit-exchange.github.io/docs/v5/market/tickers).
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
from aiohttp import WSMsgType, web

from tests.binance_server import now_ms
from tests.loopback import LoopbackServer


def linear_ticker(symbol_id: str, last: float, mark: float, bid: float, ask: float,
                  index: float | None = None) -> dict:
    """`index` defaults to the mark."""
    index = mark if index is None else index
    return {"symbol": symbol_id, "tickDirection": "PlusTick", "price24hPcnt": "0.017103", "lastPrice": f"{last:.2f}",
            "prevPrice24h": f"{last:.2f}", "highPrice24h": f"{last * 1.01:.2f}", "lowPrice24h": f"{last * 0.99:.2f}",
            "prevPrice1h": f"{last:.2f}", "markPrice": f"{mark:.2f}", "indexPrice": f"{index:.2f}",
            "openInterest": "68744.761", "openInterestValue": "1183601235.91", "turnover24h": "1570383121.94",
            "volume24h": "91705.276", "nextFundingTime": "1673280000000", "fundingRate": "-0.000212",
            "bid1Price": f"{bid:.2f}", "bid1Size": "84.489", "ask1Price": f"{ask:.2f}", "ask1Size": "83.020"}


def rest_linear_ticker(symbol_id: str, last: float, mark: float, index: float) -> dict:
    """A `GET /v5/market/tickers?category=linear` list item."""
    item = linear_ticker(symbol_id, last, mark, last - 0.5, last + 0.5, index)
    del item["tickDirection"]  # a websocket-only field
    return {**item, "predictedDeliveryPrice": "", "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0"}


def linear_instrument(base: str, quote: str) -> dict:
    return {"symbol": base + quote, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": base,
            "quoteCoin": quote, "launchTime": "1585526400000", "deliveryTime": "0", "deliveryFeeRate": "",
            "priceScale": "2", "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
            "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001", "qtyStep": "0.001",
                              "postOnlyMaxOrderQty": "1190.000", "maxMktOrderQty": "119.000",
                              "minNotionalValue": "5"},
            "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": quote, "copyTrading": "both",
            "upperFundingRate": "0.00375", "lowerFundingRate": "-0.00375", "isPreListing": False,
            "preListingInfo": None}


def spot_instrument(base: str, quote: str) -> dict:
    return {"symbol": base + quote, "baseCoin": base, "quoteCoin": quote, "innovation": "0", "status": "Trading",
            "marginTrading": "both", "stTag": "0",
            "lotSizeFilter": {"basePrecision": "0.000001", "quotePrecision": "0.00000001", "minOrderQty": "0.000048",
                              "maxOrderQty": "71.73956243", "minOrderAmt": "1", "maxOrderAmt": "2000000"},
            "priceFilter": {"tickSize": "0.01"},
            "riskParameters": {"limitParameter": "0.03", "marketParameter": "0.03"}}


class BybitServer(LoopbackServer):
    def __init__(self, pairs=(("BTC", "USDT"), ("ETH", "USDT"))) -> None:
        self.pairs = list(pairs)
        self.sockets: list[tuple[web.WebSocketResponse, set[str]]] = []
        self.requests: list[dict] = []
        self.rest_hits: dict[str, int] = {}  # instruments-info by category; "tickers/<category>"
        self.tickers: dict[str, dict] = {}  # symbol id -> a rest_linear_ticker, for REST answers
        self.ws_ok = True  # False: websocket upgrades are refused (503), as during a venue outage
        self._changed = asyncio.Event()
        self._seq = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v5/market/instruments-info", self._instruments)
        app.router.add_get("/v5/market/tickers", self._tickers)
        app.router.add_get("/v5/public/{category}", self._websocket)
        await self.serve(app)

    async def stop(self) -> None:
        for ws, _ in list(self.sockets):
            await ws.close()
        await self.shut()

    async def wait_subscribed(self, topic: str, timeout: float = 10.0) -> None:
        async def loop():
            while not any(topic in topics for _, topics in self.sockets):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)

    async def publish(self, topic: str, data: dict, kind: str = "snapshot", *, cs: int | None = None,
                      ts: int | None = None) -> None:
        """`cs` (cross sequence) and `ts` default to the next number and now."""
        self._seq = cs if cs is not None else self._seq + 1
        body = orjson.dumps({"topic": topic, "type": kind, "data": data, "cs": self._seq,
                             "ts": ts if ts is not None else now_ms()}).decode()
        for ws, topics in list(self.sockets):
            if topic in topics and not ws.closed:
                await ws.send_str(body)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.ws_ok:
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        topics: set[str] = set()
        entry = (ws, topics)
        self.sockets.append(entry)
        conn_id = str(uuid.uuid4())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = orjson.loads(msg.data)
                self.requests.append(req)
                op = req.get("op")
                reply = {"success": True, "ret_msg": "", "conn_id": conn_id, "op": op}
                if "req_id" in req:
                    reply["req_id"] = req["req_id"]
                if op == "subscribe":
                    topics.update(req.get("args", []))
                elif op == "unsubscribe":
                    topics.difference_update(req.get("args", []))
                elif op == "ping":
                    reply["ret_msg"] = "pong"
                else:
                    reply.update(success=False, ret_msg=f"error:handler not found for op {op}")
                await ws.send_str(orjson.dumps(reply).decode())
                self._changed.set()
        finally:
            self.sockets.remove(entry)
        return ws

    async def _instruments(self, request: web.Request) -> web.Response:
        category = request.query.get("category", "")
        self.rest_hits[category] = self.rest_hits.get(category, 0) + 1
        make = {"spot": spot_instrument, "linear": linear_instrument}.get(category)
        items = [make(b, q) for b, q in self.pairs] if make else []
        return web.json_response({"retCode": 0, "retMsg": "OK",
                                  "result": {"category": category, "list": items, "nextPageCursor": ""},
                                  "retExtInfo": {}, "time": now_ms()})

    async def _tickers(self, request: web.Request) -> web.Response:
        category = request.query.get("category", "")
        self.rest_hits[f"tickers/{category}"] = self.rest_hits.get(f"tickers/{category}", 0) + 1
        self._changed.set()
        wanted = request.query.get("symbol")
        items = [t for sid, t in self.tickers.items() if category == "linear" and wanted in (None, sid)]
        return web.json_response({"retCode": 0, "retMsg": "OK", "result": {"category": category, "list": items},
                                  "retExtInfo": {}, "time": now_ms()})
