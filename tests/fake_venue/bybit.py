"""A Bybit v5 unified trading account on loopback, for ccxt (unmodified) to talk to.

It speaks the real request and response shapes of the endpoints the daemon uses
(instruments, coin info, wallet balance, positions, order create / realtime / history /
cancel, no-convert repay, the FUND wallet's balance, inter-transfer and its list) and
checks every private request's signature the way Bybit does: HMAC-SHA256 over timestamp +
api key + recv window + (query string | JSON body), hex, in X-BAPI-SIGN. A wrong key or signing set-up gets retCode 10003/10004, as on Bybit.

Orders match immediate-or-cancel against the fake's own bid/ask. Knobs for tests:
`delay_create_s` (answer an order only after it was booked: a client timeout), `reject`
(the next create fails with a real Bybit retCode/retMsg), `fill_ratio` (partial fills).

The account is kept the way Bybit keeps it since its 2025 manual borrow: a borrowed coin is
credited to walletBalance and owed in spotBorrow, and only a manual repay lowers spotBorrow
(spot trades and transfers in repay derivatives liabilities, i.e. a negative walletBalance).
Its risk figures (accountMMRate, totalMarginBalance, totalMaintenanceMargin, positionMM) are
computed here from the fake's own published rules, independently of monitor/ (see
`AccountRisk`), so a test can make the venue disagree with the daemon's model:
- collateral value ratios in bands of coin quantity ("Tier (Quantity)"), on a coin's positive
  equity; a negative one counts at 100% (help centre "Understanding Collateral Value Ratios",
  https://www.bybit.com/en/help-center/article/Assets-Collateral-Value-Ratio-List-UTA);
- a loan's maintenance margin: positionMMR per tier of the borrowed quantity, borrowLimit the
  tier's accumulated upper bound (GET /v5/spot-margin-trade/position-tiers,
  https://bybit-exchange.github.io/docs/v5/spot-margin-uta/position-tiers);
- a perpetual's: value at the mark x MMR - mmDeduction of the risk-limit tier its value falls in,
  "any excess beyond a tier is subject to the next tier's MMR" (help centre "Maintenance Margin
  (USDT Contract)", https://www.bybit.com/en/help-center/article/Maintenance-Margin-USDT-Contract;
  GET /v5/market/risk-limit), plus an estimated fee to close at the entry price
  (`close_fee_rate`, unpublished: "The New Margin Calculation: Adjustments and Implications");
- account MM rate = total maintenance margin / margin balance, margin balance = weighted
  wallet balance less spot borrow plus perpetual UPL (help centre "Trading Terms and Formulas in
  Unified Trading Account", https://www.bybit.com/en/help-center/article/Glossary-Unified-Trading-Account).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.loopback import SignedVenue

FEE_RATE = 0.001
SPOT = {"BTCUSDT": ("BTC", "USDT", "0.000001", "0.000048", "1", "0.01"),
        "ETHUSDT": ("ETH", "USDT", "0.00001", "0.00062", "1", "0.01")}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


Bands = float | list[tuple[float, float]]  # one rate, or (bound, rate) pairs in ascending order
# BTCUSDT's first tiers as Bybit's help centre describes them: 0.5% up to 2,000,000 USDT, then 0.56%.
BTC_RISK_LIMITS = [(2_000_000.0, 0.005), (2_600_000.0, 0.0056), (3_200_000.0, 0.0062)]


def progressive(amount: float, lows: list[float], rates: list[float]) -> float:
    """Each band's part of `amount` at the band's rate (band j from lows[j] to lows[j + 1])."""
    total = 0.0
    for j, (lo, rate) in enumerate(zip(lows, rates, strict=True)):
        hi = lows[j + 1] if j + 1 < len(lows) else math.inf
        total += max(0.0, min(amount, hi) - lo) * rate
    return total


def by_lower(bands: Bands) -> tuple[list[float], list[float]]:
    """Bands given by their lower bound (collateral ratios: minQty)."""
    pairs = [(0.0, bands)] if isinstance(bands, int | float) else sorted(bands)
    return [lo for lo, _ in pairs], [r for _, r in pairs]


def upper_pairs(bands: Bands) -> list[tuple[float, float]]:
    """(upper bound, rate) pairs of bands given by their upper bound (borrowLimit, riskLimitValue);
    one rate is one tier up to a limit no account reaches."""
    return [(1e12, bands)] if isinstance(bands, int | float) else sorted(bands)


def by_upper(bands: Bands) -> tuple[list[float], list[float]]:
    """Lower bounds and rates of bands given by their upper bound: each starts where the last ended."""
    pairs = upper_pairs(bands)
    return [0.0] + [hi for hi, _ in pairs[:-1]], [r for _, r in pairs]


def risk_limit_rows(symbol: str, tiers: list[tuple[float, float]]) -> list[dict]:
    """GET /v5/market/risk-limit items: the fake's own mmDeduction for each tier, so that
    value x MMR - mmDeduction is the tier-by-tier sum (empty on the first tier, as Bybit shows it)."""
    lows, rates = by_upper(tiers)
    rows = []
    for j, (hi, rate) in enumerate(upper_pairs(tiers)):
        deduction = rate * lows[j] - progressive(lows[j], lows, rates)
        rows.append({"id": j + 1, "symbol": symbol, "riskLimitValue": f"{hi:g}", "maintenanceMargin": f"{rate:g}",
                     "initialMargin": f"{2 * rate:g}", "isLowestRisk": int(j == 0), "maxLeverage": f"{0.5 / rate:.2f}",
                     "mmDeduction": f"{deduction:.8g}" if j else ""})
    return rows


def position_mm(value: float, tiers: list[tuple[float, float]]) -> tuple[float, int]:
    """A position's maintenance margin at `value` (USD at the mark) and its tier's riskId: the
    published row's value x MMR - mmDeduction of the tier the value falls in (beyond the last: the last)."""
    rows = risk_limit_rows("", tiers)
    row = next((r for r in rows if value <= float(r["riskLimitValue"])), rows[-1])
    return value * float(row["maintenanceMargin"]) - float(row["mmDeduction"] or 0), row["id"]


@dataclass
class FakeBybit(SignedVenue):
    api_key: str
    secret: str
    wallet: dict[str, float] = field(default_factory=dict)  # coin -> walletBalance (borrowed coins credited)
    spot_borrow: dict[str, float] = field(default_factory=dict)  # coin -> spotBorrow (spot and manual borrows)
    interest: dict[str, float] = field(default_factory=dict)  # coin -> accruedInterest, a part of spotBorrow
    book: dict[str, tuple[float, float]] = field(default_factory=dict)  # BTCUSDT -> (bid, ask)
    collateral_ratio: dict[str, Bands] = field(default_factory=dict)  # coin -> ratio, or [(minQty, ratio)]
    borrow_mmr: dict[str, Bands] = field(default_factory=dict)  # coin -> positionMMR, or [(borrowLimit, positionMMR)]
    risk_limits: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {"BTCUSDT": list(BTC_RISK_LIMITS)})  # symbol -> [(riskLimitValue, MMR)]
    close_fee_rate: float = 0.0  # positionMM's estimated fee to close, on the entry value
    positions: list[dict] = field(default_factory=list)  # /v5/position/list items (linear_position); risk fields live
    delay_create_s: float = 0.0
    lose_next_create_s: float = 0.0
    reject: tuple[int, str] | None = None
    fill_ratio: float = 1.0
    orders: dict[str, dict] = field(default_factory=dict)  # orderLinkId -> order item
    bad_signatures: int = 0
    publish_ratios: bool = True  # GET /v5/spot-margin-trade/collateral lists collateral_ratio
    publish_borrow_tiers: bool = True  # GET /v5/spot-margin-trade/position-tiers lists borrow_mmr
    stream_connections: int = 0
    subscribers: dict[str, set] = field(default_factory=dict)  # topic -> open websockets
    down: bool = False  # every request answered 503
    down_after_create: bool = False  # the venue goes down right after booking the next order
    repays: list[tuple[str, float]] = field(default_factory=list)
    funding: dict[str, float] = field(default_factory=dict)  # the FUND wallet: coin -> balance
    transfers: dict[str, dict] = field(default_factory=dict)  # transferId -> inter-transfer record
    delay_transfer_s: float = 0.0  # booked, but answered only after this (a client timeout)
    requests: list[tuple[str, str]] = field(default_factory=list)
    created: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -- wire helpers ----------------------------------------------------------------------
    @staticmethod
    def envelope(result: dict, code: int = 0, msg: str = "OK") -> web.Response:
        body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms()}
        return web.json_response(body)

    async def authenticate(self, request: web.Request) -> tuple[dict | None, web.Response | None]:
        """The request's parameters, or Bybit's error answer for a bad key or signature."""
        h = request.headers
        body = await request.text() if request.method == "POST" else ""
        if h.get("X-BAPI-API-KEY") != self.api_key:
            self.bad_signatures += 1
            return None, self.envelope({}, 10003, "API key is invalid.")
        payload = h.get("X-BAPI-TIMESTAMP", "") + self.api_key + h.get("X-BAPI-RECV-WINDOW", "")
        payload += body if request.method == "POST" else request.rel_url.raw_query_string
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, h.get("X-BAPI-SIGN", "")):
            self.bad_signatures += 1
            return None, self.envelope({}, 10004, "error sign! origin_string[" + payload + "]")
        return (json.loads(body) if body else dict(request.query)), None

    def app(self) -> web.Application:
        @web.middleware
        async def outage(request: web.Request, handler):
            if self.down:  # a gateway in front of a venue that is down answers like this
                return web.Response(status=503, text="<html><body>503 Service Temporarily Unavailable</body></html>")
            return await handler(request)

        app = web.Application(middlewares=[outage])
        r = app.router
        r.add_get("/v5/market/instruments-info", self.instruments)
        r.add_get("/v5/spot-margin-trade/collateral", self.collateral)
        r.add_get("/v5/spot-margin-trade/position-tiers", self.private(self.position_tiers))
        r.add_get("/v5/market/risk-limit", self.risk_limit)
        r.add_get("/v5/asset/coin/query-info", self.private(self.coin_info))
        r.add_get("/v5/account/wallet-balance", self.private(self.wallet_balance))
        r.add_get("/v5/position/list", self.private(self.position_list))
        r.add_post("/v5/order/create", self.private(self.create_order))
        r.add_get("/v5/order/realtime", self.private(self.open_orders))
        r.add_get("/v5/order/history", self.private(self.order_history))
        r.add_post("/v5/order/cancel", self.private(self.cancel_order))
        r.add_post("/v5/account/no-convert-repay", self.private(self.repay))
        r.add_get("/v5/asset/transfer/query-account-coins-balance", self.private(self.fund_balance))
        r.add_post("/v5/asset/transfer/inter-transfer", self.private(self.inter_transfer))
        r.add_get("/v5/asset/transfer/query-inter-transfer-list", self.private(self.transfer_list))
        r.add_get("/v5/private", self.private_stream)
        return app

    # -- the private websocket (auth, subscribe, ping; pushes wallet and order topics) ----------------
    async def private_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = f"fake-{next(self._ids)}"
        authed = False
        self.stream_connections += 1
        try:
            async for msg in ws:
                req = json.loads(msg.data)
                op = req.get("op")
                reply = {"success": True, "ret_msg": "", "conn_id": conn, "op": op}
                if "req_id" in req:
                    reply["req_id"] = req["req_id"]
                if op == "auth":
                    key, expires, sig = req["args"]
                    good = hmac.new(self.secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
                    authed = key == self.api_key and hmac.compare_digest(good, sig) and int(expires) > now_ms()
                    if not authed:
                        self.bad_signatures += 1
                        reply.update(success=False, ret_msg="Request not authorized")
                elif op == "subscribe":
                    if not authed:
                        reply.update(success=False, ret_msg="Request not authorized")
                    else:
                        for topic in req.get("args", []):
                            self.subscribers.setdefault(topic, set()).add(ws)
                elif op == "ping":
                    reply["ret_msg"] = "pong"
                await ws.send_str(json.dumps(reply))
        finally:
            for subs in self.subscribers.values():
                subs.discard(ws)
        return ws

    async def publish(self, topic: str, data: list) -> None:
        message = json.dumps({"id": f"{topic}-{next(self._ids)}", "topic": topic, "creationTime": now_ms(),
                              "data": data})
        for ws in list(self.subscribers.get(topic, ())):
            await ws.send_str(message)

    async def push_wallet(self) -> None:
        await self.publish("wallet", [self.account_state()])

    async def push_positions(self) -> None:
        """The `position` topic: the stream says entryPrice where the REST list says avgPrice."""
        items = [{**{k: v for k, v in p.items() if k != "avgPrice"}, "entryPrice": p["avgPrice"], "category": "linear"}
                 for p in self.position_items()]
        await self.publish("position", items)

    async def drop_streams(self) -> None:
        """Closes every private stream connection (a venue restart, a network blip)."""
        for ws in {w for subs in self.subscribers.values() for w in subs}:
            await ws.close()


    # -- public ------------------------------------------------------------------------------
    async def instruments(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        category = request.query.get("category")
        items = []
        if category == "spot":
            for sym, (base, quote, step, min_qty, min_amt, tick) in SPOT.items():
                items.append({"symbol": sym, "baseCoin": base, "quoteCoin": quote, "innovation": "0",
                              "status": "Trading", "marginTrading": "utaOnly", "stTag": "0",
                              "lotSizeFilter": {"basePrecision": step, "quotePrecision": "0.00000001",
                                                "minOrderQty": min_qty, "maxOrderQty": "1000",
                                                "minOrderAmt": min_amt, "maxOrderAmt": "5000000"},
                              "priceFilter": {"tickSize": tick},
                              "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"}})
        elif category == "linear":
            items.append({"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading",
                          "baseCoin": "BTC", "quoteCoin": "USDT", "launchTime": "1585526400000",
                          "deliveryTime": "0", "deliveryFeeRate": "", "priceScale": "2",
                          "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                          "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
                          "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001", "qtyStep": "0.001",
                                            "postOnlyMaxOrderQty": "1190.000", "maxMktOrderQty": "500.000",
                                            "minNotionalValue": "5"},
                          "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": "USDT",
                          "copyTrading": "both", "upperFundingRate": "0.005", "lowerFundingRate": "-0.005"})
        return self.envelope({"category": category, "list": items, "nextPageCursor": ""})

    async def collateral(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        items = []
        for coin, bands in self.collateral_ratio.items() if self.publish_ratios else ():
            lows, rates = by_lower(bands)
            items.append({"currency": coin, "collateralRatioList": [
                {"minQty": f"{lo:g}", "maxQty": f"{lows[j + 1]:g}" if j + 1 < len(lows) else "",
                 "collateralRatio": f"{r:g}"} for j, (lo, r) in enumerate(zip(lows, rates, strict=True))]})
        return self.envelope({"list": items})

    async def position_tiers(self, params: dict) -> web.Response:
        """GET /v5/spot-margin-trade/position-tiers (signed; `currency` filters)."""
        items = []
        for coin, bands in self.borrow_mmr.items() if self.publish_borrow_tiers else ():
            if params.get("currency") not in (None, coin):
                continue
            items.append({"currency": coin, "positionTiersRatioList": [
                {"tier": str(j + 1), "borrowLimit": f"{hi:g}", "positionMMR": f"{r:.8f}",
                 "positionIMR": f"{2 * r:.8f}", "maxLeverage": f"{1 / (2 * r):g}" if r else "10"}
                for j, (hi, r) in enumerate(upper_pairs(bands))]})
        return self.envelope({"list": items})

    async def risk_limit(self, request: web.Request) -> web.Response:
        """GET /v5/market/risk-limit (public; category linear, `symbol` filters)."""
        self.requests.append((request.method, request.path))
        q = request.query
        if q.get("category") != "linear":
            return self.envelope({}, 10001, "params error: category only support linear or inverse")
        rows = [row for sym, tiers in self.risk_limits.items() if q.get("symbol") in (None, sym)
                for row in risk_limit_rows(sym, tiers)]
        return self.envelope({"category": "linear", "list": rows, "nextPageCursor": ""})

    # -- account -------------------------------------------------------------------------------
    async def coin_info(self, params: dict) -> web.Response:
        rows = [{"name": c, "coin": c, "remainAmount": "1000000", "chains": []} for c in ("BTC", "ETH", "USDT")]
        return self.envelope({"rows": rows})

    def price(self, coin: str) -> float:
        """The coin's USD index (and the linear perpetual's mark): the book's mid."""
        if coin in ("USDT", "USDC"):
            return 1.0
        bid, ask = self.book[coin + "USDT"]
        return (bid + ask) / 2

    def net(self, coin: str) -> float:
        """The coin's equity less perpetual UPL: walletBalance - spotBorrow."""
        return self.wallet.get(coin, 0.0) - self.spot_borrow.get(coin, 0.0)

    def coins(self) -> list[str]:
        return sorted(set(self.wallet) | set(self.spot_borrow))

    def position_items(self) -> list[dict]:
        """The positions with their live risk fields at the current mark."""
        out = []
        for p in self.positions:
            size, entry = float(p["size"]), float(p["avgPrice"])
            sign = 1 if p["side"] == "Buy" else -1
            mark = self.price(p["symbol"].removesuffix("USDT"))
            value = size * mark
            mm, risk_id = position_mm(value, self.risk_limits[p["symbol"]]) if size else (0.0, 1)
            mm += size * entry * self.close_fee_rate
            out.append({**p, "markPrice": f"{mark:.2f}", "positionValue": f"{value:.4f}", "riskId": risk_id,
                        "positionIM": f"{value / float(p['leverage']):.4f}", "positionMM": f"{mm:.8f}",
                        "unrealisedPnl": f"{sign * size * (mark - entry):.8f}"})
        return out

    def risk(self) -> dict[str, float]:
        """The account's figures in USD, by the fake's own rules (module docstring)."""
        upl = mm = collateral = owed = 0.0
        for p in self.position_items():
            upl += float(p["unrealisedPnl"])
            mm += float(p["positionMM"])
        for coin in self.coins():
            net, px = self.net(coin), self.price(coin)
            if net > 0:
                collateral += px * progressive(net, *by_lower(self.collateral_ratio.get(coin, 1.0)))
            else:
                owed += -net * px
                mm += px * progressive(-net, *by_upper(self.borrow_mmr.get(coin, 0.0)))
        balance = collateral - owed + upl
        return {"collateral": collateral, "liabilities": owed, "upl": upl, "mm": mm, "balance": balance,
                "rate": mm / balance if balance > 0 else 0.0}

    def mm_rate(self) -> float:
        """Bybit's account MM rate: maintenance margin / margin balance."""
        return self.risk()["rate"]

    def account_state(self) -> dict:
        """One UNIFIED account as wallet-balance and the wallet stream carry it."""
        risk = self.risk()
        coins = []
        for coin in self.coins():
            qty, borrowed = self.wallet.get(coin, 0.0), self.spot_borrow.get(coin, 0.0)
            upl = risk["upl"] if coin == "USDT" else 0.0  # linear perpetuals settle in USDT
            equity = qty - borrowed + upl
            coins.append({"coin": coin, "equity": f"{equity:.10f}", "usdValue": f"{equity * self.price(coin):.6f}",
                          "walletBalance": f"{qty:.10f}", "spotBorrow": f"{borrowed:.10f}", "free": "", "locked": "0",
                          "borrowAmount": f"{borrowed + max(-qty, 0):.10f}", "availableToBorrow": "",
                          "availableToWithdraw": "", "accruedInterest": f"{self.interest.get(coin, 0.0):.10f}",
                          "totalOrderIM": "0", "totalPositionIM": "0", "totalPositionMM": "0",
                          "unrealisedPnl": f"{upl:.8f}", "cumRealisedPnl": "0", "bonus": "0", "collateralSwitch": True,
                          "marginCollateral": True, "spotHedgingQty": "0"})
        total = sum(float(c["usdValue"]) for c in coins)
        return {"accountType": "UNIFIED", "accountIMRate": "0", "accountMMRate": f"{risk['rate']:.4f}",
                "accountLTV": "0", "totalEquity": f"{total:.4f}",
                "totalWalletBalance": f"{risk['balance'] - risk['upl']:.4f}",
                "totalMarginBalance": f"{risk['balance']:.4f}", "totalAvailableBalance": f"{risk['balance']:.4f}",
                "totalPerpUPL": f"{risk['upl']:.4f}", "totalInitialMargin": "0",
                "totalMaintenanceMargin": f"{risk['mm']:.4f}", "coin": coins}

    async def wallet_balance(self, params: dict) -> web.Response:
        if params.get("accountType") != "UNIFIED":
            return self.envelope({}, 10001, "accountType only support UNIFIED.")
        return self.envelope({"list": [self.account_state()]})

    async def position_list(self, params: dict) -> web.Response:
        return self.envelope({"category": params.get("category", "linear"), "list": self.position_items(),
                              "nextPageCursor": ""})

    async def repay(self, params: dict) -> web.Response:
        """POST /v5/account/no-convert-repay: the spot liability paid from the coin's own balance
        (the only way a spot liability is repaid since the 2025 manual borrow)."""
        coin = params["coin"]
        owed = self.spot_borrow.get(coin, 0.0)
        x = max(0.0, min(float(params.get("amount") or owed), owed, self.wallet.get(coin, 0.0)))
        self.repays.append((coin, x))
        self.spot_borrow[coin], self.wallet[coin] = owed - x, self.wallet.get(coin, 0.0) - x
        return self.envelope({"resultStatus": "SU"})

    # -- the FUND wallet and transfers between own accounts ----------------------------------------
    async def fund_balance(self, params: dict) -> web.Response:
        if params.get("accountType") != "FUND":
            return self.envelope({}, 131203, "Request parameter error.")
        rows = [{"coin": c, "walletBalance": f"{q:.8f}", "transferBalance": f"{q:.8f}", "bonus": ""}
                for c, q in self.funding.items()]
        return self.envelope({"memberId": "533285", "accountType": "FUND", "balance": rows})

    async def inter_transfer(self, params: dict) -> web.Response:
        tid, coin, amount = params["transferId"], params["coin"], float(params["amount"])
        if tid in self.transfers:
            return self.envelope({}, 131214, "TransferId exist")
        if (params["fromAccountType"], params["toAccountType"]) != ("FUND", "UNIFIED"):
            return self.envelope({}, 131208, "Forbid transfer")
        if self.funding.get(coin, 0.0) < amount:
            return self.envelope({}, 131212, "Insufficient balance")
        self.funding[coin] -= amount
        self.wallet[coin] = self.wallet.get(coin, 0.0) + amount  # a spot liability stays: the net rises
        self.transfers[tid] = {"transferId": tid, "coin": coin, "amount": params["amount"], "fromAccountType": "FUND",
                               "toAccountType": "UNIFIED", "timestamp": str(now_ms()), "status": "SUCCESS"}
        await self.push_wallet()
        if self.delay_transfer_s:
            await asyncio.sleep(self.delay_transfer_s)
        return self.envelope({"transferId": tid})

    async def transfer_list(self, params: dict) -> web.Response:
        rows = [t for t in self.transfers.values()
                if params.get("transferId") in (None, t["transferId"]) and params.get("coin") in (None, t["coin"])]
        return self.envelope({"list": rows, "nextPageCursor": ""})

    # -- orders ------------------------------------------------------------------------------------
    async def create_order(self, params: dict) -> web.Response:
        if self.lose_next_create_s:  # the request dies on the way: never booked, answered too late
            delay, self.lose_next_create_s = self.lose_next_create_s, 0.0
            await asyncio.sleep(delay)
            return self.envelope({}, 10016, "Server error.")
        link = params.get("orderLinkId", "")
        if link in self.orders:
            return self.envelope({}, 170141, "Duplicate clientOrderId.")
        if self.reject is not None:
            code, msg = self.reject
            self.reject = None
            return self.envelope({}, code, msg)
        sym, side = params["symbol"], params["side"]
        base, quote = SPOT[sym][:2]
        qty, limit = float(params["qty"]), float(params["price"])
        if qty * limit < float(SPOT[sym][4]):
            return self.envelope({}, 170140, "Order value exceeded lower limit.")
        have = self.wallet.get(base if side == "Sell" else quote, 0.0)
        if have < (qty if side == "Sell" else qty * limit):
            return self.envelope({}, 170131, "Insufficient balance.")
        bid, ask = self.book[sym]
        crosses = bid >= limit if side == "Sell" else ask <= limit
        filled = qty * self.fill_ratio if crosses else 0.0
        avg = bid if side == "Sell" else ask
        fee_coin, fee = (quote, filled * avg * FEE_RATE) if side == "Sell" else (base, filled * FEE_RATE)
        sign = -1 if side == "Sell" else 1
        self.wallet[base] = self.wallet.get(base, 0.0) + sign * filled - (fee if fee_coin == base else 0)
        self.wallet[quote] = self.wallet.get(quote, 0.0) - sign * filled * avg - (fee if fee_coin == quote else 0)
        status = "Filled" if filled >= qty else ("PartiallyFilledCanceled" if filled > 0 else "Cancelled")
        order_id = str(1_700_000_000_000_000_000 + next(self._ids))
        ts = str(now_ms())
        self.orders[link] = {
            "orderId": order_id, "orderLinkId": link, "blockTradeId": "", "symbol": sym, "price": params["price"],
            "qty": params["qty"], "side": side, "isLeverage": "0", "positionIdx": 0, "orderStatus": status,
            "cancelType": "UNKNOWN" if status == "Filled" else "CancelByUser", "rejectReason": "EC_NoError",
            "avgPrice": f"{avg:.2f}" if filled else "", "leavesQty": "0", "leavesValue": "0",
            "cumExecQty": f"{filled:.8f}", "cumExecValue": f"{filled * avg:.8f}", "cumExecFee": f"{fee:.10f}",
            "cumFeeDetail": {fee_coin: f"{fee:.10f}"} if filled else {},
            "timeInForce": params.get("timeInForce", "GTC"), "orderType": params.get("orderType", "Limit"),
            "stopOrderType": "", "orderIv": "", "triggerPrice": "0.00", "takeProfit": "", "stopLoss": "",
            "tpTriggerBy": "", "slTriggerBy": "", "triggerDirection": 0, "triggerBy": "", "lastPriceOnCreated": "",
            "reduceOnly": False, "closeOnTrigger": False, "smpType": "None", "smpGroup": 0, "smpOrderId": "",
            "placeType": "", "createdTime": ts, "updatedTime": ts}
        self.created.set()
        await self.publish("order", [{**self.orders[link], "category": "spot"}])
        if filled:
            await self.push_wallet()
        if self.down_after_create:
            self.down_after_create, self.down = False, True
        if self.delay_create_s:
            await asyncio.sleep(self.delay_create_s)  # booked, but the answer comes too late
        return self.envelope({"orderId": order_id, "orderLinkId": link})

    def _select(self, params: dict, final: bool) -> list[dict]:
        out = []
        for o in self.orders.values():
            done = o["orderStatus"] in ("Filled", "Cancelled", "PartiallyFilledCanceled", "Rejected")
            if done != final:
                continue
            if params.get("orderLinkId") and o["orderLinkId"] != params["orderLinkId"]:
                continue
            if params.get("symbol") and o["symbol"] != params["symbol"]:
                continue
            out.append(o)
        return sorted(out, key=lambda o: o["createdTime"], reverse=True)

    async def open_orders(self, params: dict) -> web.Response:
        return self.envelope({"category": params.get("category"), "list": self._select(params, False),
                              "nextPageCursor": ""})

    async def order_history(self, params: dict) -> web.Response:
        return self.envelope({"category": params.get("category"), "list": self._select(params, True),
                              "nextPageCursor": ""})

    async def cancel_order(self, params: dict) -> web.Response:
        o = self.orders.get(params.get("orderLinkId", ""))
        if o is None or o["orderStatus"] not in ("New", "PartiallyFilled"):
            return self.envelope({}, 170213, "Order does not exist.")
        o["orderStatus"] = "Cancelled" if o["cumExecQty"].strip("0.") == "" else "PartiallyFilledCanceled"
        return self.envelope({"orderId": o["orderId"], "orderLinkId": o["orderLinkId"]})


def linear_position(side: str, size: float, entry: float, leverage: float = 10) -> dict:
    """One BTCUSDT item of GET /v5/position/list (one-way mode); side "" with size 0 is a closed
    one. The mark, value, margins and PnL are filled in live by the fake (position_items)."""
    ts = str(now_ms())
    return {"positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": "BTCUSDT", "side": side,
            "size": f"{size:g}", "avgPrice": f"{entry:.2f}", "positionValue": "0", "tradeMode": 0,
            "autoAddMargin": 0, "positionStatus": "Normal", "leverage": f"{leverage:g}", "markPrice": "0",
            "liqPrice": "", "bustPrice": "", "positionIM": "0", "positionMM": "0",
            "positionBalance": "0", "tpslMode": "Full", "takeProfit": "0.00", "stopLoss": "0.00",
            "trailingStop": "0.00", "unrealisedPnl": "0", "curRealisedPnl": "0", "cumRealisedPnl": "0",
            "adlRankIndicator": 2, "createdTime": ts, "updatedTime": ts, "seq": 1, "isReduceOnly": False,
            "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": ""}
