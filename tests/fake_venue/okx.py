"""An OKX v5 multi-currency margin account on loopback, for ccxt (unmodified) to talk to.

The real request and response shapes of the endpoints the daemon uses: public instruments
(SPOT, SWAP) and discount-rate tiers, GET /api/v5/account/balance and /account/positions,
POST /trade/order and /trade/cancel-order, GET /trade/order, /trade/orders-pending and
/trade/orders-history. Private requests are checked as OKX does: OK-ACCESS-KEY, the
passphrase, and OK-ACCESS-SIGN = base64 HMAC-SHA256 of timestamp + method + request path
(with its query) + body; a demo-trading key answers only requests that carry
`x-simulated-trading: 1`, and a live key only those that do not (code 50101).

The private websocket /ws/v5/private (ccxt adds `?brokerId=9999` in sandbox mode; only the
path is routed) speaks OKX's text frames: the login op (sign = base64 HMAC-SHA256 of
timestamp + "GET/users/self/verify"; a bad one is answered 60009, the connection left open),
subscribe to `account` and `positions` (each answered with the channel's snapshot at once),
and the "ping"/"pong" keepalive. It cannot tell a demo key from a live one (OKX does by
host). Tests push with `push_account`, `push_positions` and `publish`, and break the
connections with `drop_streams`.

Orders match immediate-or-cancel against the fake's bid/ask. Knobs as in the other fakes:
`delay_create_s`, `reject` (the next create fails with an OKX sCode/sMsg), `fill_ratio`;
and `delay_balance_s`.

The account follows OKX's documented rules, computed here on their own (nothing of monitor/ is
used), so a test can compare the daemon with the venue and make them disagree:
- a coin's equity eq = cashBal + the floating PnL of the cross swaps settled in it - accrued
  interest; its liability liab = crossLiab = |min(0, eq)|, the part the unrealised loss makes is
  uplLiab (help centre "Multi-currency margin mode: cross margin trading",
  https://www.okx.com/help/iv-multi-currency-margin-mode-cross-margin-trading; API "Get balance");
- adjusted equity = each positive equity at its coin's discount-rate bands (in the coin, band-wise:
  the 11M USDT -> 10.3M example) at the USD price, plus each negative equity at the USD price;
- maintenance margin (`mmr`) = each swap's notional x the mmr of the tier its size in contracts is
  in (minSz < pos <= maxSz: the whole position at that rate; "Tiered maintenance margin ratio
  rules", https://www.okx.com/help/v-tiered-maintenance-margin-ratio-rules; API "Get position
  tiers"), plus each borrowed coin's borrowing (liab - uplLiab) x the mmr of its tier (position
  tiers, instType MARGIN, `ccy`: "the borrowing amount") x the mmr of its tier. The docs do not say
  whether the swaps' PnL in the coin (which moves liab) changes the borrowing margined: the fake
  margins the borrowing itself, interest - cashBal;
- mgnRatio = adjEq / (mmr + liquidation fees), the fee being the positions' notional x
  `liq_fee_rate` (the taker rate; the "Get balance" response example has exactly
  adjEq / mgnRatio = mmr + 0.05% x notionalUsd).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.loopback import SignedVenue

FEE_RATE = 0.001
LIQ_FEE_RATE = 0.0005  # OKX's taker rate for swaps at the base fee tier: what a liquidation pays
CT_VAL = 0.01  # BTC per BTC-USDT-SWAP contract
# BTC-USDT swap tiers: (maxSz in contracts, mmr); a position of minSz < pos <= maxSz is margined at mmr.
SWAP_TIERS = [(2000.0, 0.004), (5000.0, 0.006), (10000.0, 0.01), (1e8, 0.02)]
SPOT = {"BTC-USDT": ("BTC", "USDT", "0.00000001", "0.00001", "0.1")}  # instId -> base, quote, lotSz, minSz, tickSz


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class FakeOkx(SignedVenue):
    api_key: str
    secret: str
    passphrase: str
    demo: bool = True  # the key belongs to demo trading
    cash: dict[str, float] = field(default_factory=dict)  # ccy -> cashBal (negative = borrowed)
    interest: dict[str, float] = field(default_factory=dict)
    book: dict[str, tuple[float, float]] = field(default_factory=dict)  # BTC-USDT -> (bid, ask)
    discount: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # ccy -> [(minAmt in the coin, rate)]
    # ccy -> borrowing tiers [(maxSz in the coin, mmr)]; instFamily -> swap tiers [(maxSz in contracts, mmr)]
    borrow_tiers: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    swap_tiers: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {"BTC-USDT": list(SWAP_TIERS)})
    swaps: dict[str, tuple[float, float]] = field(default_factory=dict)  # BTC-USDT-SWAP -> (pos in contracts, avgPx)
    liq_fee_rate: float = LIQ_FEE_RATE
    delay_create_s: float = 0.0
    delay_balance_s: float = 0.0  # GET /account/balance answers this late (the stream's snapshot comes first)
    reject: tuple[str, str] | None = None
    fill_ratio: float = 1.0
    orders: dict[str, dict] = field(default_factory=dict)  # clOrdId -> order
    bad_signatures: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    stream_connections: int = 0
    subscribers: dict[str, set] = field(default_factory=dict)  # channel -> logged-in websockets
    pings: int = 0  # keepalive pings answered
    _ids: itertools.count = field(default_factory=lambda: itertools.count(600_000_000_001))

    # -- wire helpers ----------------------------------------------------------------------
    @staticmethod
    def answer(data: list, code: str = "0", msg: str = "", status: int = 200) -> web.Response:
        return web.json_response({"code": code, "msg": msg, "data": data}, status=status)

    async def authenticate(self, request: web.Request) -> tuple[dict | None, web.Response | None]:
        h = request.headers
        body = await request.text() if request.method == "POST" else ""
        if h.get("OK-ACCESS-KEY") != self.api_key:
            self.bad_signatures += 1
            return None, self.answer([], "50111", "Invalid OK-ACCESS-KEY", 401)
        if h.get("OK-ACCESS-PASSPHRASE") != self.passphrase:
            self.bad_signatures += 1
            return None, self.answer([], "50105", "Invalid OK-ACCESS-PASSPHRASE", 401)
        if (h.get("x-simulated-trading") == "1") != self.demo:
            return None, self.answer([], "50101", "APIKey does not match current environment.", 401)
        path = request.rel_url.raw_path + ("?" + request.rel_url.raw_query_string if request.rel_url.raw_query_string
                                           else "")
        payload = h.get("OK-ACCESS-TIMESTAMP", "") + request.method + path + body
        good = base64.b64encode(hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(good, h.get("OK-ACCESS-SIGN", "")):
            self.bad_signatures += 1
            return None, self.answer([], "50113", "Invalid Sign", 401)
        return (json.loads(body) if body else dict(request.query)), None

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/api/v5/public/instruments", self.instruments)
        r.add_get("/api/v5/public/discount-rate-interest-free-quota", self.discount_rates)
        r.add_get("/api/v5/public/position-tiers", self.position_tiers)
        r.add_get("/api/v5/account/balance", self.private(self.balance))
        r.add_get("/api/v5/account/positions", self.private(self.positions))
        r.add_post("/api/v5/trade/order", self.private(self.create_order))
        r.add_get("/api/v5/trade/order", self.private(self.query_order))
        r.add_post("/api/v5/trade/cancel-order", self.private(self.cancel_order))
        r.add_get("/api/v5/trade/orders-pending", self.private(self.pending))
        r.add_get("/api/v5/trade/orders-history", self.private(self.history))
        r.add_get("/ws/v5/private", self.private_stream)
        return app

    # -- the private websocket (login, subscribe, text ping; pushes account and positions) -----
    async def private_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = f"okx-{next(self._ids)}"
        logged_in = False
        self.stream_connections += 1
        try:
            async for msg in ws:
                if msg.data == "ping":
                    self.pings += 1
                    await ws.send_str("pong")
                    continue
                req = json.loads(msg.data)
                if req.get("op") == "login":
                    logged_in = self.login_ok((req.get("args") or [{}])[0])
                    reply = ({"event": "login", "code": "0", "msg": "", "connId": conn} if logged_in else
                             {"event": "error", "code": "60009", "msg": "Login failed.", "connId": conn})
                    await ws.send_str(json.dumps(reply))
                elif req.get("op") == "subscribe":
                    for arg in req.get("args") or []:
                        if not logged_in:
                            await ws.send_str(json.dumps({"event": "error", "code": "60011",
                                                          "msg": "Please log in", "connId": conn}))
                            continue
                        self.subscribers.setdefault(arg["channel"], set()).add(ws)
                        await ws.send_str(json.dumps({"event": "subscribe", "arg": arg, "connId": conn}))
                        await self.push_snapshot(arg["channel"], [ws])  # OKX sends the state at once
        finally:
            for subs in self.subscribers.values():
                subs.discard(ws)
        return ws

    def login_ok(self, arg: dict) -> bool:
        """OKX's websocket login: sign = base64 HMAC-SHA256 of timestamp + "GET/users/self/verify"."""
        payload = f"{arg.get('timestamp', '')}GET/users/self/verify"
        good = base64.b64encode(hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).digest()).decode()
        ok = (arg.get("apiKey") == self.api_key and arg.get("passphrase") == self.passphrase
              and hmac.compare_digest(good, str(arg.get("sign", ""))))
        self.bad_signatures += not ok
        return ok

    async def publish(self, channel: str, data: list, to: list | None = None, **fields) -> None:
        """One push on `channel` to its subscribers (or to `to`), its arg as ccxt subscribed."""
        arg = {"channel": channel, "instType": "ANY"} if channel == "positions" else {"channel": channel}
        message = json.dumps({"arg": {**arg, "uid": "448721"}, **fields, "data": data})
        for ws in list(self.subscribers.get(channel, ()) if to is None else to):
            await ws.send_str(message)

    async def push_snapshot(self, channel: str, to: list | None = None) -> None:
        """The channel's whole state: every coin of the account, or every open position."""
        if channel == "account":
            await self.publish(channel, [self.account_data()], to, eventType="snapshot", curPage=1, lastPage=True)
        elif channel == "positions":
            await self.publish(channel, self.open_positions(), to)

    async def push_account(self, ccys: list[str] | None = None) -> None:
        """The `account` channel: a snapshot of every coin, or an event with only `ccys`."""
        if ccys is None:
            await self.push_snapshot("account")
            return
        account = self.account_data()
        account["details"] = [d for d in account["details"] if d["ccy"] in ccys]
        await self.publish("account", [account], eventType="event", curPage=1, lastPage=True)

    async def push_positions(self, inst_ids: list[str]) -> None:
        """The `positions` channel: the positions on `inst_ids` (pos 0 once closed)."""
        await self.publish("positions", [self.position_item(i) for i in inst_ids])

    async def drop_streams(self) -> None:
        """Closes every private stream connection (a venue restart, a network blip)."""
        for ws in {w for subs in self.subscribers.values() for w in subs}:
            await ws.close()

    # -- public ------------------------------------------------------------------------------
    async def instruments(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        kind = request.query.get("instType")
        items = []
        for inst, (base, quote, lot, min_sz, tick) in SPOT.items():
            common = {"alias": "", "category": "1", "expTime": "", "lever": "10", "listTime": "1548133413000",
                      "maxIcebergSz": "9999999999", "maxLmtAmt": "1000000", "maxLmtSz": "9999999999",
                      "maxMktAmt": "1000000", "maxMktSz": "", "maxStopSz": "", "maxTriggerSz": "9999999999",
                      "maxTwapSz": "9999999999", "optType": "", "state": "live", "stk": "", "tickSz": tick,
                      "ruleType": "normal"}
            if kind == "SPOT":
                items.append({**common, "instType": "SPOT", "instId": inst, "baseCcy": base, "quoteCcy": quote,
                              "settleCcy": "", "ctMult": "", "ctType": "", "ctVal": "", "ctValCcy": "",
                              "instFamily": "", "uly": "", "lotSz": lot, "minSz": min_sz})
            elif kind == "SWAP":
                items.append({**common, "instType": "SWAP", "instId": inst + "-SWAP", "baseCcy": "", "quoteCcy": "",
                              "settleCcy": quote, "ctMult": "1", "ctType": "linear", "ctVal": f"{CT_VAL}",
                              "ctValCcy": base, "instFamily": inst, "uly": inst, "lotSz": "0.01", "minSz": "0.01"})
        return self.answer(items)

    async def discount_rates(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        items = []
        for ccy, bands in self.discount.items():
            bounds = [b[0] for b in bands[1:]] + [0.0]
            details = [{"discountRate": f"{rate}", "maxAmt": f"{hi:.12g}" if hi else "", "minAmt": f"{lo:.12g}",
                        "tier": str(i + 1), "liqPenaltyRate": "0.02", "disCcyEq": "0"}
                       for i, ((lo, rate), hi) in enumerate(zip(bands, bounds))]
            items.append({"amt": "0", "ccy": ccy, "collateralRestrict": False, "details": details,
                          "discountLv": "", "minDiscountRate": "0"})
        return self.answer(items)

    async def position_tiers(self, request: web.Request) -> web.Response:
        """GET /api/v5/public/position-tiers: tdMode is required; instType SWAP answers the families
        asked for (sizes in contracts), MARGIN with `ccy` the coin's borrowing tiers (in the coin)."""
        self.requests.append((request.method, request.path + "?" + request.rel_url.raw_query_string))
        q = request.query
        if q.get("tdMode") not in ("cross", "isolated"):
            return self.answer([], "51000", "Parameter tdMode error")
        if q.get("instType") == "SWAP":
            tables = [(f, "", self.swap_tiers.get(f) or []) for f in q.get("instFamily", "").split(",")]
        elif q.get("instType") == "MARGIN" and q.get("ccy"):
            tables = [("", "", self.borrow_tiers.get(q["ccy"]) or [])]
        else:
            return self.answer([], "51000", "Parameter instFamily or ccy error")
        items = []
        for family, inst, rows in tables:
            for i, (hi, mmr) in enumerate(rows):
                lo = rows[i - 1][0] if i else 0.0
                items.append({"uly": family, "instFamily": family, "instId": inst, "tier": str(i + 1),
                              "minSz": f"{lo:.12g}", "maxSz": f"{hi:.12g}", "mmr": f"{mmr}", "imr": f"{2 * mmr}",
                              "maxLever": f"{1 / (2 * mmr):g}", "optMgnFactor": "0", "quoteMaxLoan": "",
                              "baseMaxLoan": ""})
        return self.answer(items)

    # -- the account -------------------------------------------------------------------------
    def price(self, ccy: str) -> float:
        if ccy in ("USDT", "USDC"):
            return 1.0
        bid, ask = self.book[ccy + "-USDT"]
        return (bid + ask) / 2

    def discounted(self, ccy: str, qty: float) -> float:
        """The USD value of `qty` of a coin at its progressive discount-rate bands (bounds in the coin)."""
        bands = self.discount.get(ccy) or [(0.0, 1.0)]
        out = 0.0
        for i, (lo, rate) in enumerate(bands):
            hi = bands[i + 1][0] if i + 1 < len(bands) else float("inf")
            out += max(0.0, min(qty, hi) - lo) * rate
        return out * self.price(ccy)

    @staticmethod
    def tier_mmr(rows: list[tuple[float, float]], amount: float) -> float:
        """The mmr of the tier `amount` is in (minSz < amount <= maxSz); past the last, the last."""
        for hi, mmr in rows:
            if amount <= hi:
                return mmr
        return rows[-1][1] if rows else 0.0

    def swap_terms(self, inst: str) -> tuple[float, float, float]:
        """(notional at the mark, maintenance margin, unrealised PnL) of a swap, in USDT."""
        pos, avg = self.swaps.get(inst, (0.0, 0.0))
        mark = self.price(inst.split("-")[0])
        notional = abs(pos) * CT_VAL * mark
        rows = self.swap_tiers.get(inst.removesuffix("-SWAP")) or []
        return notional, notional * self.tier_mmr(rows, abs(pos)), pos * CT_VAL * (mark - avg)

    def coin(self, ccy: str) -> dict[str, float]:
        """One coin's equity, liabilities and borrowing maintenance margin, in the coin (USDT for mm)."""
        cash, interest = self.cash.get(ccy, 0.0), self.interest.get(ccy, 0.0)
        upl = sum(self.swap_terms(i)[2] for i in self.swaps) if ccy == "USDT" else 0.0  # swaps settle in USDT
        eq = cash + upl - interest
        liab = max(-eq, 0.0)
        borrowing = max(interest - cash, 0.0)  # owed without the swaps' loss
        upl_liab = max(liab - borrowing, 0.0)
        mm = borrowing * self.tier_mmr(self.borrow_tiers.get(ccy) or [], borrowing) * self.price(ccy)
        return {"cash": cash, "interest": interest, "upl": upl, "eq": eq, "liab": liab, "upl_liab": upl_liab,
                "mm": mm}

    def account_sums(self) -> dict[str, float]:
        """adjEq, mmr, notionalUsd and mgnRatio's denominator (mmr + liquidation fees), in USD."""
        coins = [self.coin(c) | {"px": self.price(c), "ccy": c} for c in self.cash]
        adj = sum(self.discounted(c["ccy"], c["eq"]) if c["eq"] > 0 else c["eq"] * c["px"] for c in coins)
        swaps = [self.swap_terms(i) for i, (pos, _) in self.swaps.items() if pos]
        notional = sum(n for n, _, _ in swaps)
        mmr = sum(c["mm"] for c in coins) + sum(m for _, m, _ in swaps)
        return {"adj": adj, "mmr": mmr, "notional": notional, "den": mmr + notional * self.liq_fee_rate,
                "upl": sum(u for _, _, u in swaps)}

    def margin_ratio(self) -> float | None:
        """mgnRatio = adjusted equity / (maintenance margin + liquidation fees); None with nothing to cover."""
        sums = self.account_sums()
        return sums["adj"] / sums["den"] if sums["den"] > 0 else None

    async def balance(self, params: dict) -> web.Response:
        await asyncio.sleep(self.delay_balance_s)
        return self.answer([self.account_data()])

    def account_data(self) -> dict:
        """The account as GET /account/balance's data[0] and the `account` channel show it."""
        details = []
        for ccy in sorted(self.cash):
            c, px = self.coin(ccy), self.price(ccy)
            details.append({"availBal": f"{max(c['cash'], 0):.10f}", "availEq": f"{max(c['eq'], 0):.10f}",
                            "cashBal": f"{c['cash']:.10f}", "ccy": ccy, "crossLiab": f"{c['liab']:.10f}",
                            "disEq": f"{self.discounted(ccy, max(c['eq'], 0)):.8f}", "eq": f"{c['eq']:.10f}",
                            "eqUsd": f"{c['eq'] * px:.8f}", "fixedBal": "0", "frozenBal": "0", "imr": "",
                            "interest": f"{c['interest']:.10f}", "isoEq": "0", "isoLiab": "0", "isoUpl": "0",
                            "liab": f"{c['liab']:.10f}", "maxLoan": "", "mgnRatio": "", "mmr": "",
                            "notionalLever": "", "ordFrozen": "0", "spotInUseAmt": "", "stgyEq": "0", "twap": "0",
                            "uTime": str(now_ms()), "upl": f"{c['upl']:.10f}", "uplLiab": f"{c['upl_liab']:.10f}"})
        sums = self.account_sums()
        total = sum(self.coin(k)["eq"] * self.price(k) for k in self.cash)
        ratio = self.margin_ratio()
        return {"adjEq": f"{sums['adj']:.8f}", "borrowFroz": "0", "details": details, "imr": "0", "isoEq": "0",
                "mgnRatio": f"{ratio:.12g}" if ratio else "", "mmr": f"{sums['mmr']:.10f}",
                "notionalUsd": f"{sums['notional']:.10f}", "notionalUsdForSwap": f"{sums['notional']:.10f}",
                "ordFroz": "0", "totalEq": f"{total:.8f}", "uTime": str(now_ms()), "upl": f"{sums['upl']:.10f}"}

    def position_item(self, inst: str) -> dict:
        """One net-mode cross swap position as /account/positions and the positions channel show it."""
        pos, avg = self.swaps.get(inst, (0.0, 0.0))
        notional, mm, upl = self.swap_terms(inst)
        mark = self.price(inst.split("-")[0])
        return {"adl": "1", "availPos": "", "avgPx": f"{avg}", "cTime": str(now_ms()), "ccy": "USDT",
                "instId": inst, "instType": "SWAP", "lever": "10", "liab": "", "liabCcy": "", "liqPx": "",
                "markPx": f"{mark}", "margin": "", "mgnMode": "cross", "mgnRatio": "", "mmr": f"{mm}",
                "imr": f"{notional / 10}", "notionalUsd": f"{notional}", "pos": f"{pos:.12g}", "posCcy": "",
                "posId": str(abs(hash(inst)) % 10**18), "posSide": "net", "upl": f"{upl}",
                "uTime": str(now_ms())}

    def open_positions(self) -> list[dict]:
        """What GET /account/positions and the channel's snapshot list: the swaps held."""
        return [self.position_item(i) for i, (pos, _) in self.swaps.items() if pos]

    async def positions(self, params: dict) -> web.Response:
        return self.answer(self.open_positions())

    # -- orders ------------------------------------------------------------------------------
    async def create_order(self, params: dict) -> web.Response:
        cid, ts = params.get("clOrdId", ""), str(now_ms())

        def failed(code: str, msg: str) -> web.Response:
            return web.json_response({"code": "1", "msg": "All operations failed", "inTime": ts, "outTime": ts,
                                      "data": [{"clOrdId": cid, "ordId": "", "tag": "", "ts": ts, "sCode": code,
                                                "sMsg": msg}]})
        if cid in self.orders:
            return failed("51016", "Duplicated client order ID")
        if self.reject is not None:
            (code, msg), self.reject = self.reject, None
            return failed(code, msg)
        if params.get("tdMode") != "cross" or params.get("ordType") != "ioc":
            return failed("51000", "Parameter tdMode/ordType error")
        inst, side = params["instId"], params["side"]
        base, quote = SPOT[inst][:2]
        qty, limit = float(params["sz"]), float(params["px"])
        if side == "sell" and self.cash.get(base, 0.0) < qty:
            return failed("51008", f"Order failed. Insufficient {base} balance in account.")
        bid, ask = self.book[inst]
        crosses = bid >= limit if side == "sell" else ask <= limit
        filled = qty * self.fill_ratio if crosses else 0.0
        avg = bid if side == "sell" else ask
        sign = -1 if side == "sell" else 1
        self.cash[base] = self.cash.get(base, 0.0) + sign * filled
        self.cash[quote] = self.cash.get(quote, 0.0) - sign * filled * avg - filled * avg * FEE_RATE
        self.orders[cid] = {
            "accFillSz": f"{filled:.8f}", "algoClOrdId": "", "algoId": "", "avgPx": f"{avg}" if filled else "",
            "cTime": ts, "cancelSource": "", "category": "normal", "ccy": params.get("ccy", ""), "clOrdId": cid,
            "fee": f"{-filled * avg * FEE_RATE:.8f}", "feeCcy": quote, "fillPx": f"{avg}" if filled else "",
            "fillSz": f"{filled:.8f}", "fillTime": ts, "instId": inst, "instType": "SPOT", "lever": "",
            "ordId": str(next(self._ids)), "ordType": "ioc", "pnl": "0", "posSide": "net", "px": params["px"],
            "rebate": "0", "rebateCcy": base, "reduceOnly": "false", "side": side, "source": "",
            "state": "filled" if filled >= qty else "canceled",  # IOC: the rest is cancelled at once
            "sz": params["sz"], "tag": "", "tdMode": "cross", "tgtCcy": "", "tradeId": "", "uTime": ts}
        if self.delay_create_s:
            await asyncio.sleep(self.delay_create_s)
        o = self.orders[cid]
        return web.json_response({"code": "0", "msg": "", "inTime": ts, "outTime": ts, "data": [
            {"clOrdId": cid, "ordId": o["ordId"], "tag": "", "ts": ts, "sCode": "0", "sMsg": "Order placed"}]})

    async def query_order(self, params: dict) -> web.Response:
        o = self.orders.get(params.get("clOrdId", ""))
        if o is None or o["instId"] != params.get("instId"):
            return self.answer([], "51603", "Order does not exist")
        return self.answer([o])

    async def cancel_order(self, params: dict) -> web.Response:
        o = self.orders.get(params.get("clOrdId", ""))
        ts = str(now_ms())
        if o is None or o["state"] not in ("live", "partially_filled"):
            return web.json_response({"code": "1", "msg": "All operations failed", "data": [
                {"clOrdId": params.get("clOrdId", ""), "ordId": "", "ts": ts, "sCode": "51400",
                 "sMsg": "Cancellation failed as the order has been filled, canceled or does not exist."}]})
        o["state"] = "canceled"
        return self.answer([{"clOrdId": o["clOrdId"], "ordId": o["ordId"], "ts": ts, "sCode": "0", "sMsg": ""}])

    async def pending(self, params: dict) -> web.Response:
        return self.answer([o for o in self.orders.values() if o["state"] in ("live", "partially_filled")
                            and o["instType"] == params.get("instType", "SPOT")])

    async def history(self, params: dict) -> web.Response:
        if params.get("instType") not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            return self.answer([], "51000", "Parameter instType error")
        state = params.get("state")
        return self.answer([o for o in self.orders.values() if o["instType"] == params["instType"]
                            and o["state"] in ("filled", "canceled") and (state is None or o["state"] == state)])

