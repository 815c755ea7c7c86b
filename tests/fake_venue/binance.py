"""A Binance classic cross-margin account on loopback, for ccxt (unmodified) to talk to.

The real request and response shapes of the endpoints the daemon uses: spot exchangeInfo,
GET /sapi/v1/margin/account, /sapi/v1/margin/tradeCoeff and /sapi/v1/margin/priceIndex, margin
order create / query / cancel / openOrders / allOrders, and POST /sapi/v1/margin/borrow-repay.
Signed requests are checked as Binance does: X-MBX-APIKEY, and `signature` = hex HMAC-SHA256 of
the rest of the query string (or form body); a bad one is HTTP 400 {"code": -1022}. Orders match
immediate-or-cancel against the fake's bid/ask; knobs as in the Bybit fake (delay_create_s,
reject, fill_ratio).

The account's figures follow Binance's own rules, computed here from the fake's balances (not
from monitor/): every asset held (free + locked) at its index price, every liability (borrowed
+ interest) likewise, gross, in BTC ("Margin Level and Margin Call" FAQ,
https://www.binance.com/en/support/faq/binance-margin-level-and-margin-call-360030493931):
margin level = total asset value / (total liabilities + outstanding interest); the collateral
margin level values each asset at its collateral ratio. The fake's index price is its mid.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web

from tests.loopback import SignedVenue

FEE_RATE = 0.001
MARKETS = {"BTCUSDT": ("BTC", "USDT", "0.00001000", "0.01000000", "5.00000000")}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BinanceSigned(SignedVenue):
    """Binance's request signing, shared by its spot/margin and futures fakes: X-MBX-APIKEY, and
    `signature` = hex HMAC-SHA256 of the rest of the query string (or form body)."""

    api_key: str
    secret: str
    bad_signatures: int

    @staticmethod
    def error(code: int, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    async def authenticate(self, request: web.Request) -> tuple[dict | None, web.Response | None]:
        raw = request.rel_url.raw_query_string if request.method in ("GET", "DELETE") else await request.text()
        payload, _, signature = raw.rpartition("&signature=")
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            self.bad_signatures += 1
            return None, self.error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        good = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(good, signature):
            self.bad_signatures += 1
            return None, self.error(-1022, "Signature for this request is not valid.")
        return dict(parse_qsl(payload)), None


@dataclass
class FakeBinance(BinanceSigned):
    api_key: str
    secret: str
    free: dict[str, float] = field(default_factory=dict)
    borrowed: dict[str, float] = field(default_factory=dict)
    interest: dict[str, float] = field(default_factory=dict)
    locked: dict[str, float] = field(default_factory=dict)  # in open orders: still the account's asset
    collateral_ratio: dict[str, float] = field(default_factory=dict)  # asset -> ratio (default 1)
    # GET /sapi/v1/margin/tradeCoeff: normalBar, marginCallBar, forceLiquidationBar (the docs' example)
    bars: tuple[float, float, float] = (1.5, 1.3, 1.1)
    account_type: str = "MARGIN_1"  # MARGIN_1 Cross Margin Classic, MARGIN_2 Cross Margin Pro
    book: dict[str, tuple[float, float]] = field(default_factory=dict)  # BTCUSDT -> (bid, ask)
    delay_create_s: float = 0.0
    reject: tuple[int, str] | None = None
    fill_ratio: float = 1.0
    orders: dict[str, dict] = field(default_factory=dict)  # clientOrderId -> order
    repays: list[tuple[str, float]] = field(default_factory=list)
    bad_signatures: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/api/v3/exchangeInfo", self.exchange_info)
        r.add_get("/sapi/v1/margin/account", self.private(self.account))
        r.add_get("/sapi/v1/margin/tradeCoeff", self.private(self.trade_coeff))
        r.add_get("/sapi/v1/margin/priceIndex", self.private(self.price_index))
        r.add_post("/sapi/v1/margin/order", self.private(self.create_order))
        r.add_get("/sapi/v1/margin/order", self.private(self.query_order))
        r.add_delete("/sapi/v1/margin/order", self.private(self.cancel_order))
        r.add_get("/sapi/v1/margin/openOrders", self.private(self.open_orders))
        r.add_get("/sapi/v1/margin/allOrders", self.private(self.all_orders))
        r.add_post("/sapi/v1/margin/borrow-repay", self.private(self.borrow_repay))
        return app


    async def exchange_info(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        symbols = []
        for sym, (base, quote, step, tick, notional) in MARKETS.items():
            symbols.append({
                "symbol": sym, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
                "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                                                              "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": True,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000", "stepSize": step},
                    {"filterType": "NOTIONAL", "minNotional": notional, "applyMinToMarket": True,
                     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5}],
                "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]})
        return web.json_response({"timezone": "UTC", "serverTime": now_ms(), "rateLimits": [], "exchangeFilters": [],
                                  "symbols": symbols})

    def price(self, asset: str) -> float:
        if asset == "USDT":
            return 1.0
        bid, ask = self.book[asset + "USDT"]
        return (bid + ask) / 2

    def held(self, asset: str) -> float:
        return self.free.get(asset, 0.0) + self.locked.get(asset, 0.0)

    def owed(self, asset: str) -> float:
        return self.borrowed.get(asset, 0.0) + self.interest.get(asset, 0.0)

    def in_btc(self, amounts: dict[str, float]) -> float:
        btc = self.price("BTC")
        return sum(q * self.price(a) / btc for a, q in amounts.items())

    def totals_btc(self) -> tuple[float, float]:
        """(total asset value, total liabilities + interest), in BTC, gross per asset."""
        assets = set(self.free) | set(self.locked) | set(self.borrowed) | set(self.interest)
        return (self.in_btc({a: self.held(a) for a in assets}), self.in_btc({a: self.owed(a) for a in assets}))

    def margin_level(self) -> float:
        """Binance's margin level; 999 with nothing owed (what the account shows then)."""
        total, debt = self.totals_btc()
        return total / debt if debt > 0 else 999.0

    def collateral_value_usdt(self) -> float:
        return sum(self.held(a) * self.price(a) * self.collateral_ratio.get(a, 1.0)
                   for a in set(self.free) | set(self.locked))

    async def account(self, params: dict) -> web.Response:
        assets = []
        for a in sorted(set(self.free) | set(self.locked) | set(self.borrowed)):
            free, locked = self.free.get(a, 0.0), self.locked.get(a, 0.0)
            owed, interest = self.borrowed.get(a, 0.0), self.interest.get(a, 0.0)
            assets.append({"asset": a, "borrowed": f"{owed:.8f}", "free": f"{free:.8f}", "interest": f"{interest:.8f}",
                           "locked": f"{locked:.8f}", "netAsset": f"{free + locked - owed - interest:.8f}"})
        total, debt = self.totals_btc()
        collateral = self.collateral_value_usdt()
        collateral_level = collateral / (debt * self.price("BTC")) if debt > 0 else 999.0
        return web.json_response({
            "created": True, "borrowEnabled": True, "marginLevel": f"{self.margin_level():.8f}",
            "collateralMarginLevel": f"{collateral_level:.8f}", "totalAssetOfBtc": f"{total:.8f}",
            "totalLiabilityOfBtc": f"{debt:.8f}", "totalNetAssetOfBtc": f"{total - debt:.8f}",
            "TotalCollateralValueInUSDT": f"{collateral:.8f}", "totalOpenOrderLossInUSDT": "0.00000000",
            "tradeEnabled": True, "transferInEnabled": True, "transferOutEnabled": True,
            "accountType": self.account_type, "userAssets": assets})

    async def trade_coeff(self, params: dict) -> web.Response:
        normal, call, liquidation = self.bars
        return web.json_response({"normalBar": f"{normal}", "marginCallBar": f"{call}",
                                  "forceLiquidationBar": f"{liquidation}"})

    async def price_index(self, params: dict) -> web.Response:
        symbol = params.get("symbol", "")
        if symbol not in self.book:
            return self.error(-1121, "Invalid symbol.")
        return web.json_response({"calcTime": now_ms(), "price": f"{self.price(symbol[:-4]):.8f}", "symbol": symbol})

    def _order(self, o: dict) -> dict:
        return {k: v for k, v in o.items() if not k.startswith("_")}

    async def create_order(self, params: dict) -> web.Response:
        cid = params.get("newClientOrderId", "")
        if cid in self.orders:
            return self.error(-2010, "Duplicate order sent.")
        if self.reject is not None:
            (code, msg), self.reject = self.reject, None
            return self.error(code, msg)
        sym, side = params["symbol"], params["side"]
        base, quote = MARKETS[sym][:2]
        qty, limit = float(params["quantity"]), float(params["price"])
        if self.free.get(base if side == "SELL" else quote, 0.0) < (qty if side == "SELL" else qty * limit):
            return self.error(-2010, "Account has insufficient balance for requested action.")
        bid, ask = self.book[sym]
        crosses = bid >= limit if side == "SELL" else ask <= limit
        filled = qty * self.fill_ratio if crosses else 0.0
        avg = bid if side == "SELL" else ask
        sign = -1 if side == "SELL" else 1
        self.free[base] = self.free.get(base, 0.0) + sign * filled
        self.free[quote] = self.free.get(quote, 0.0) - sign * filled * avg - filled * avg * FEE_RATE
        status = "FILLED" if filled >= qty else "EXPIRED"  # IOC: the rest expires
        ts = now_ms()
        self.orders[cid] = {
            "symbol": sym, "orderId": next(self._ids), "clientOrderId": cid, "price": params["price"],
            "origQty": params["quantity"], "executedQty": f"{filled:.8f}", "cummulativeQuoteQty": f"{filled * avg:.8f}",
            "status": status, "timeInForce": params.get("timeInForce", "GTC"), "type": params.get("type", "LIMIT"),
            "side": side, "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": ts, "updateTime": ts,
            "isWorking": False, "isIsolated": False, "selfTradePreventionMode": "EXPIRE_MAKER"}
        if self.delay_create_s:
            await asyncio.sleep(self.delay_create_s)
        o = self.orders[cid]
        return web.json_response({**{k: o[k] for k in ("symbol", "orderId", "clientOrderId", "price", "origQty",
                                                        "executedQty", "cummulativeQuoteQty", "status", "timeInForce",
                                                        "type", "side", "isIsolated", "selfTradePreventionMode")},
                                  "transactTime": ts})

    async def query_order(self, params: dict) -> web.Response:
        o = self.orders.get(params.get("origClientOrderId", ""))
        if o is None or o["symbol"] != params.get("symbol"):
            return self.error(-2013, "Order does not exist.")
        return web.json_response(o)

    async def cancel_order(self, params: dict) -> web.Response:
        o = self.orders.get(params.get("origClientOrderId", ""))
        if o is None or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return self.error(-2011, "Unknown order sent.")
        o["status"] = "CANCELED"
        return web.json_response(o)

    async def open_orders(self, params: dict) -> web.Response:
        return web.json_response([o for o in self.orders.values() if o["status"] in ("NEW", "PARTIALLY_FILLED")
                                  and o["symbol"] == params.get("symbol", o["symbol"])])

    async def all_orders(self, params: dict) -> web.Response:
        return web.json_response([o for o in self.orders.values() if o["symbol"] == params.get("symbol")])

    async def borrow_repay(self, params: dict) -> web.Response:
        if params.get("type") != "REPAY" or params.get("isIsolated") != "FALSE":
            return self.error(-1102, "Mandatory parameter 'type' was not sent, was empty/null, or malformed.")
        asset, amount = params["asset"], float(params["amount"])
        pay = min(amount, self.free.get(asset, 0.0), self.borrowed.get(asset, 0.0) + self.interest.get(asset, 0.0))
        if pay <= 0:
            return self.error(-3015, "Repay amount exceeds borrow amount.")
        interest = min(pay, self.interest.get(asset, 0.0))  # interest is repaid first, as on Binance
        self.interest[asset] = self.interest.get(asset, 0.0) - interest
        self.borrowed[asset] -= pay - interest
        self.free[asset] -= pay
        self.repays.append((asset, pay))
        return web.json_response({"tranId": 100_000_000 + next(self._ids)})

