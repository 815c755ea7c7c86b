"""A Binance USDⓈ-M futures account in Multi-Assets mode on loopback, for ccxt (unmodified).

The real request and response shapes of the endpoints the daemon uses: GET /fapi/v1/exchangeInfo
and /fapi/v1/assetIndex (public), GET /fapi/v1/multiAssetsMargin, /fapi/v1/leverageBracket and
/fapi/v3/account, order create / query / cancel / allOrders on /fapi/v1, the user-data stream's
listenKey (POST/PUT /fapi/v1/listenKey, key header only) and its websocket
(/private/ws?listenKey=...), which pushes ACCOUNT_UPDATE events. Requests are signed as on
Binance spot (tests/fake_venue/binance.py).

Orders match immediate-or-cancel against the fake's bid/ask; reduce-only orders never open or
flip a position. A fill settles realized pnl and the fee in USDT. The margin ratio follows
Binance's own rules, computed here from the fake's balances, buffers and brackets (not from
monitor/), so a test can make the venue disagree with our model:
- "How to Calculate Margin Ratio in the Multi-Assets Mode" (https://www.binance.com/en/support/
  faq/how-to-calculate-margin-in-multi-assets-mode-c983a9268cfa4e70a4916c276bb3b7bc): an asset's
  equity is its wallet balance plus the unrealized PnL of the contracts it margins; account
  equity = sum of min(equity * bidRate, equity * askRate), bidRate = index * (1 - bidBuffer),
  askRate = index * (1 + askBuffer) (GET /fapi/v1/assetIndex); account maintenance margin = each
  position's maintenance margin times its margin asset's askRate; margin ratio = maintenance /
  equity, liquidation at 100%.
- "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts" (https://www.binance.com/en/
  support/faq/b3c689c1f50a44cabb3a84e663b81d93): maintenance margin = notional * maintenance
  margin rate of the notional's bracket - maintenance amount, the amount of bracket n being
  floor_n * (rate_n - rate_n-1) + amount_n-1 (the fake derives `cum` so, from the caps and rates).
Knobs as in the other fakes: delay_create_s, reject, fill_ratio.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from tests.fake_venue.binance import BinanceSigned, now_ms

FEE_RATE = 0.0005
# symbol -> base, quote (the margin asset), stepSize, tickSize, min notional
PERPS = {"BTCUSDT": ("BTC", "USDT", "0.001", "0.10", "100"), "ETHUSDC": ("ETH", "USDC", "0.001", "0.01", "20")}
STABLES = ("USDT", "USDC")
# BTCUSDT's published brackets, (notional cap, maintenance margin rate): Binance, "Updates to Leverage
# and Margin Tiers of Binance Futures Contracts (2021-03-18)",
# https://www.binance.com/en/support/announcement/86cf9aa472574b8cb2e05bb751c2a9a6 (the table the
# liquidation-price FAQ's examples use: 264,000 USDT at 1%, a maintenance amount of 1,300 at 500,000).
BTCUSDT_BRACKETS = ((50_000, 0.004), (250_000, 0.005), (1_000_000, 0.01), (10_000_000, 0.025),
                    (20_000_000, 0.05), (50_000_000, 0.10), (100_000_000, 0.125), (200_000_000, 0.15),
                    (300_000_000, 0.25), (500_000_000, 0.5))


def with_amounts(brackets) -> list[tuple[float, float, float, float]]:
    """(floor, cap, rate, maintenance amount) per bracket, the amount by Binance's formula."""
    out, floor, cum, prev = [], 0.0, 0.0, 0.0
    for cap, rate in brackets:
        cum += floor * (rate - prev)
        out.append((floor, float(cap), rate, cum))
        floor, prev = float(cap), rate
    return out


@dataclass
class FakeBinanceUsdm(BinanceSigned):
    api_key: str
    secret: str
    wallet: dict[str, float] = field(default_factory=dict)  # margin asset -> walletBalance
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)  # BTCUSDT -> (signed amount, entry)
    book: dict[str, tuple[float, float]] = field(default_factory=dict)  # BTCUSDT -> (bid, ask)
    haircut: dict[str, float] = field(default_factory=dict)  # asset -> bidBuffer (assetIndex)
    ask_buffer: dict[str, float] = field(default_factory=dict)  # asset -> askBuffer (default: its bidBuffer)
    brackets: dict[str, tuple] = field(default_factory=dict)  # BTCUSDT -> ((notional cap, rate), ...)
    stable_index: dict[str, float] = field(default_factory=dict)  # USDT -> its USDTUSD index (default 1)
    multi_assets: bool = True
    delay_create_s: float = 0.0
    reject: tuple[int, str] | None = None
    fill_ratio: float = 1.0
    orders: dict[str, dict] = field(default_factory=dict)  # clientOrderId -> order
    bad_signatures: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    listen_keys: set[str] = field(default_factory=set)
    streams: set = field(default_factory=set)  # open user-data websockets
    stream_connections: int = 0
    _ids: itertools.count = field(default_factory=lambda: itertools.count(8_000_000_001))

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/fapi/v1/exchangeInfo", self.exchange_info)
        r.add_get("/fapi/v1/assetIndex", self.asset_index)
        r.add_get("/fapi/v1/multiAssetsMargin", self.private(self.multi_assets_margin))
        r.add_get("/fapi/v3/account", self.private(self.account))
        r.add_get("/fapi/v1/leverageBracket", self.private(self.leverage_bracket))
        r.add_post("/fapi/v1/order", self.private(self.create_order))
        r.add_get("/fapi/v1/order", self.private(self.query_order))
        r.add_delete("/fapi/v1/order", self.private(self.cancel_order))
        r.add_get("/fapi/v1/allOrders", self.private(self.all_orders))
        r.add_post("/fapi/v1/listenKey", self.listen_key)
        r.add_put("/fapi/v1/listenKey", self.listen_key)
        r.add_get("/private/ws", self.user_stream)
        return app

    # -- public --------------------------------------------------------------------------------
    async def exchange_info(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        symbols = []
        for sym, (base, quote, step, tick, notional) in PERPS.items():
            symbols.append({
                "symbol": sym, "pair": sym, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000", "baseAsset": base, "quoteAsset": quote, "marginAsset": quote,
                "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
                "underlyingType": "COIN", "underlyingSubType": ["PoW"], "triggerProtect": "0.0500",
                "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000", "stepSize": step},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "120", "stepSize": step},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                    {"filterType": "MIN_NOTIONAL", "notional": notional},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                     "multiplierDecimal": "4"}],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                               "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"], "permissionSets": ["GRID", "COPY"]})
        return web.json_response({
            "timezone": "UTC", "serverTime": now_ms(), "futuresType": "U_MARGINED", "rateLimits": [],
            "exchangeFilters": [], "symbols": symbols,
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"}
                       for a in ("BTC", "ETH", *STABLES)]})

    def rates(self, asset: str) -> tuple[float, float]:
        """(bidRate, askRate) of a margin asset: its index less its bid buffer, plus its ask buffer."""
        index, bid = self.price(asset), self.haircut.get(asset, 0.0)
        return index * (1 - bid), index * (1 + self.ask_buffer.get(asset, bid))

    async def asset_index(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        out = []
        for asset, buffer in self.haircut.items():
            index, (bid_rate, ask_rate) = self.price(asset), self.rates(asset)
            ask = self.ask_buffer.get(asset, buffer)
            out.append({"symbol": asset + "USD", "time": now_ms(), "index": f"{index:.8f}",
                        "bidBuffer": f"{buffer:.8f}", "askBuffer": f"{ask:.8f}",
                        "bidRate": f"{bid_rate:.8f}", "askRate": f"{ask_rate:.8f}",
                        "autoExchangeBidBuffer": f"{buffer / 2:.8f}", "autoExchangeAskBuffer": f"{ask / 2:.8f}",
                        "autoExchangeBidRate": f"{index * (1 - buffer / 2):.8f}",
                        "autoExchangeAskRate": f"{index * (1 + ask / 2):.8f}"})
        return web.json_response(out)

    # -- the account ----------------------------------------------------------------------------
    def price(self, asset: str) -> float:
        """A margin asset's index; a coin's is its USDT book's mid (the fake's marks too)."""
        if asset in STABLES:
            return self.stable_index.get(asset, 1.0)
        bid, ask = self.book[asset + "USDT"]
        return (bid + ask) / 2

    def mark(self, symbol: str) -> float:
        return self.price(PERPS[symbol][0])

    def pnl(self, symbol: str) -> float:
        amount, entry = self.positions[symbol]
        return amount * (self.mark(symbol) - entry)

    def bracket(self, symbol: str, notional: float) -> tuple[float, float, float, float]:
        """The bracket a notional falls in: floor < notional <= cap (the first from 0)."""
        table = with_amounts(self.brackets.get(symbol, BTCUSDT_BRACKETS))
        return next((b for b in table if notional <= b[1]), table[-1])

    def maint(self, symbol: str) -> float:
        """The position's maintenance margin, in its margin asset."""
        notional = abs(self.positions[symbol][0]) * self.mark(symbol)
        _, _, rate, cum = self.bracket(symbol, notional)
        return notional * rate - cum

    def asset_equity(self, asset: str) -> float:
        return self.wallet.get(asset, 0.0) + sum(self.pnl(s) for s in self.positions if PERPS[s][1] == asset)

    def margin_assets(self) -> set[str]:
        return set(self.wallet) | {PERPS[s][1] for s in self.positions}

    def margin_balance(self) -> float:
        """Account equity in USD: each asset's equity at its bid rate, or its ask rate when negative."""
        return sum(min(e * r for r in self.rates(a)) for a in self.margin_assets() if (e := self.asset_equity(a)))

    def maint_margin(self) -> float:
        """Account maintenance margin in USD: each position's at its margin asset's ask rate."""
        return sum(self.maint(s) * self.rates(PERPS[s][1])[1] for s in self.positions)

    def margin_ratio(self) -> float:
        """Account maintenance margin / account equity, as Binance shows it (liquidation at 100%)."""
        return self.maint_margin() / self.margin_balance()

    async def multi_assets_margin(self, params: dict) -> web.Response:
        return web.json_response({"multiAssetsMargin": self.multi_assets})

    async def leverage_bracket(self, params: dict) -> web.Response:
        out = []
        for s in PERPS:
            table = with_amounts(self.brackets.get(s, BTCUSDT_BRACKETS))
            brackets = [{"bracket": n + 1, "initialLeverage": max(1, round(0.5 / rate)), "notionalCap": cap,
                         "notionalFloor": floor, "maintMarginRatio": rate, "cum": cum}
                        for n, (floor, cap, rate, cum) in enumerate(table)]
            out.append({"symbol": s, "brackets": brackets})
        if "symbol" in params:
            return web.json_response(next(o for o in out if o["symbol"] == params["symbol"]))
        return web.json_response(out)

    async def account(self, params: dict) -> web.Response:
        assets = []
        for a in sorted(self.margin_assets()):
            wallet, equity = self.wallet.get(a, 0.0), self.asset_equity(a)
            maint = sum(self.maint(s) for s in self.positions if PERPS[s][1] == a)
            assets.append({"asset": a, "walletBalance": f"{wallet:.8f}", "unrealizedProfit": f"{equity - wallet:.8f}",
                           "marginBalance": f"{equity:.8f}", "maintMargin": f"{maint:.8f}",
                           "initialMargin": "0.00000000", "positionInitialMargin": "0.00000000",
                           "openOrderInitialMargin": "0.00000000", "crossWalletBalance": f"{wallet:.8f}",
                           "crossUnPnl": f"{equity - wallet:.8f}", "availableBalance": f"{wallet:.8f}",
                           "maxWithdrawAmount": f"{wallet:.8f}", "updateTime": now_ms()})
        positions = []
        for s, (amount, _) in sorted(self.positions.items()):
            positions.append({"symbol": s, "positionSide": "BOTH", "positionAmt": f"{amount:.3f}",
                              "unrealizedProfit": f"{self.pnl(s):.8f}", "isolatedMargin": "0.00000000",
                              "notional": f"{amount * self.mark(s):.8f}", "isolatedWallet": "0",
                              "initialMargin": f"{abs(amount) * self.mark(s) / 10:.8f}",
                              "maintMargin": f"{self.maint(s):.8f}", "updateTime": now_ms()})
        # Multi-Assets mode: the account totals in USD (API docs "Account Information V3").
        pnl = sum(self.pnl(s) * self.price(PERPS[s][1]) for s in self.positions)
        return web.json_response({
            "totalInitialMargin": "0.00000000", "totalMaintMargin": f"{self.maint_margin():.8f}",
            "totalWalletBalance": f"{sum(q * self.price(a) for a, q in self.wallet.items()):.8f}",
            "totalUnrealizedProfit": f"{pnl:.8f}", "totalMarginBalance": f"{self.margin_balance():.8f}",
            "totalPositionInitialMargin": "0.00000000", "totalOpenOrderInitialMargin": "0.00000000",
            "totalCrossWalletBalance": "0.00000000", "totalCrossUnPnl": "0.00000000",
            "availableBalance": "0.00000000", "maxWithdrawAmount": "0.00000000",
            "assets": assets, "positions": positions})

    # -- orders ---------------------------------------------------------------------------------
    async def create_order(self, params: dict) -> web.Response:
        cid = params.get("newClientOrderId", "")
        if cid in self.orders:
            return self.error(-4116, "ClientOrderId is duplicated.")
        if self.reject is not None:
            (code, msg), self.reject = self.reject, None
            return self.error(code, msg)
        sym, side = params["symbol"], params["side"]
        qty, limit = float(params["quantity"]), float(params["price"])
        amount, entry = self.positions.get(sym, (0.0, 0.0))
        sign = 1 if side == "BUY" else -1
        if params.get("reduceOnly") == "true" and (amount * sign >= 0 or qty > abs(amount) + 1e-12):
            return self.error(-2022, "ReduceOnly Order is rejected.")
        bid, ask = self.book[sym]
        crosses = bid >= limit if side == "SELL" else ask <= limit
        filled = qty * self.fill_ratio if crosses else 0.0
        avg = bid if side == "SELL" else ask
        closed = min(filled, abs(amount)) if amount * sign < 0 else 0.0
        realized = closed * (avg - entry) * (1 if amount > 0 else -1)
        quote = PERPS[sym][1]
        self.wallet[quote] = self.wallet.get(quote, 0.0) + realized - filled * avg * FEE_RATE
        left = amount + sign * filled
        if abs(left) < 1e-12:
            self.positions.pop(sym, None)
        else:
            self.positions[sym] = (left, entry if closed == filled else avg)
        ts = now_ms()
        self.orders[cid] = {
            "orderId": next(self._ids), "symbol": sym, "status": "FILLED" if filled >= qty else "EXPIRED",
            "clientOrderId": cid, "price": params["price"], "avgPrice": f"{avg if filled else 0:.2f}",
            "origQty": params["quantity"], "executedQty": f"{filled:.3f}", "cumQty": f"{filled:.3f}",
            "cumQuote": f"{filled * avg:.8f}", "timeInForce": params.get("timeInForce", "GTC"),
            "type": params.get("type", "LIMIT"), "reduceOnly": params.get("reduceOnly") == "true",
            "closePosition": False, "side": side, "positionSide": "BOTH", "stopPrice": "0.00",
            "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": params.get("type", "LIMIT"),
            "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0,
            "time": ts, "updateTime": ts}
        if filled:
            await self.push_account_update([quote], [sym])
        if self.delay_create_s:
            await asyncio.sleep(self.delay_create_s)
        return web.json_response({k: v for k, v in self.orders[cid].items() if k != "time"})

    def _find(self, params: dict) -> dict | None:
        o = self.orders.get(params.get("origClientOrderId", ""))
        return o if o is not None and o["symbol"] == params.get("symbol") else None

    async def query_order(self, params: dict) -> web.Response:
        o = self._find(params)
        return web.json_response(o) if o is not None else self.error(-2013, "Order does not exist.")

    async def cancel_order(self, params: dict) -> web.Response:
        o = self._find(params)
        if o is None or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return self.error(-2011, "Unknown order sent.")
        o["status"] = "CANCELED"
        return web.json_response(o)

    async def all_orders(self, params: dict) -> web.Response:
        return web.json_response([o for o in self.orders.values() if o["symbol"] == params.get("symbol")])

    # -- the user-data stream --------------------------------------------------------------------
    async def listen_key(self, request: web.Request) -> web.Response:
        """A listenKey needs the API key header only (no signature), as on Binance."""
        self.requests.append((request.method, request.path))
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            self.bad_signatures += 1
            return self.error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        key = next(iter(self.listen_keys)) if self.listen_keys else secrets.token_hex(32)
        self.listen_keys.add(key)
        return web.json_response({"listenKey": key})

    async def user_stream(self, request: web.Request) -> web.WebSocketResponse:
        if request.query.get("listenKey") not in self.listen_keys:
            return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        self.streams.add(ws)
        self.stream_connections += 1
        try:
            async for _ in ws:  # the user-data stream takes no requests
                pass
        finally:
            self.streams.discard(ws)
        return ws

    async def push_account_update(self, assets: list[str], symbols: list[str], reason: str = "ORDER") -> None:
        """ACCOUNT_UPDATE with the wallet balance of `assets` and the positions on `symbols` (0 when closed)."""
        ts = now_ms()
        balances = [{"a": a, "wb": f"{self.wallet.get(a, 0.0):.8f}", "cw": f"{self.wallet.get(a, 0.0):.8f}",
                     "bc": "0"} for a in assets]
        positions = []
        for s in symbols:
            amount, entry = self.positions.get(s, (0.0, 0.0))
            positions.append({"s": s, "pa": f"{amount:.3f}", "ep": f"{entry:.2f}", "bep": f"{entry:.2f}",
                              "cr": "0", "up": f"{self.pnl(s) if s in self.positions else 0:.8f}", "mt": "cross",
                              "iw": "0", "ps": "BOTH", "ma": PERPS[s][1]})
        message = json.dumps({"e": "ACCOUNT_UPDATE", "E": ts, "T": ts,
                              "a": {"m": reason, "B": balances, "P": positions}})
        for ws in list(self.streams):
            await ws.send_str(message)

    async def drop_streams(self) -> None:
        """Closes every user-data websocket (a venue restart, an expired listenKey)."""
        for ws in list(self.streams):
            await ws.close()

