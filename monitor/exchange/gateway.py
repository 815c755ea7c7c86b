"""The one place ccxt is imported: an exchange account behind a small typed interface.

Third-party exceptions are translated here (VenueRejected: the venue said no, a human
must look; VenueUnavailable: transient, retry), and every message is scrubbed of the
account's credentials before it leaves. The rest of the daemon never sees a ccxt dict.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
import ccxt.pro as ccxtpro
import orjson

from monitor.config import AccountSettings
from monitor.exchange.credentials import Credentials
from monitor.exchange.venues import VenueState, bybit_collateral_tiers, bybit_unified_state

FINAL = ("closed", "canceled", "rejected", "expired")
NETTING_VENUES = frozenset({"bybit"})
LOOKUP_TRIES = 5  # an order placed a moment ago may take a moment to show in the venue's lists


class VenueError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class VenueRejected(VenueError):
    """The venue (or its published limits) refused: insufficient balance, min notional, rate limit..."""


class VenueUnavailable(VenueError):
    """No answer (timeout, connection, 5xx): the outcome of a write is unknown until looked up."""


@dataclass(frozen=True, slots=True)
class VenueOrder:
    client_id: str
    symbol: str
    side: str
    amount: float
    filled: float
    average: float | None
    fee: float  # in quote units
    status: str  # open | closed | canceled | rejected | expired

    @property
    def final(self) -> bool:
        return self.status in FINAL


def override_urls(urls: Any, rest: str | None, ws: str | None) -> Any:
    """Every API base URL of a ccxt exchange re-rooted on `rest` (http) or `ws` (websocket),
    keeping the venue's paths; a base not given leaves those URLs as they are."""
    if isinstance(urls, dict):
        return {k: override_urls(v, rest, ws) for k, v in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        base = ws if urls.startswith(("ws://", "wss://")) else rest
        return base.rstrip("/") + urlsplit(urls).path if base else urls
    return urls


def build_exchange(acc: AccountSettings, creds: Credentials, timeout_s: float) -> Any:
    """A configured ccxt client (no I/O here: markets load on first use)."""
    cls = getattr(ccxtpro, acc.source)  # ccxt.pro: REST as ccxt, plus the private streams
    options: dict[str, Any] = {}
    if acc.source == "bybit":
        # The account model says unified: skip the key-info probe (it needs extra permissions).
        options = {"enableUnifiedAccount": True, "enableUnifiedMargin": False,
                   "fetchMarkets": {"types": ["spot", "linear"]}, "defaultType": "spot"}
    exchange = cls({"apiKey": creds.api_key, "secret": creds.secret, "enableRateLimit": True,
                    "timeout": int(timeout_s * 1000), "options": options})
    if acc.testnet:
        exchange.set_sandbox_mode(True)
    if acc.rest_url or acc.ws_url:
        exchange.urls["api"] = override_urls(exchange.urls["api"], acc.rest_url, acc.ws_url)
    return exchange


def venue_reason(err: Exception, creds: Credentials) -> str:
    """The venue's own words (retMsg / msg) when the error carries its JSON, else ccxt's message."""
    text = str(err)
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            body = orjson.loads(match.group(0))
            msg = body.get("retMsg") or body.get("msg")
            code = body.get("retCode", body.get("code"))
            if msg:
                text = f"{msg} (code {code})" if code is not None else str(msg)
        except (orjson.JSONDecodeError, AttributeError):
            pass
    return creds.redact(f"{type(err).__name__}: {text}")[:300]


class ExchangeGateway:
    def __init__(self, acc: AccountSettings, creds: Credentials, timeout_s: float, exchange: Any | None = None):
        self.account = acc.name
        self.venue = acc.source
        self._creds = creds
        self._x = exchange if exchange is not None else build_exchange(acc, creds, timeout_s)
        self._markets_loaded = False
        self._positions: list[dict[str, Any]] = []  # as of the last REST sync (the stream carries balances)
        self._tiers: dict[str, tuple[tuple[float, float], ...]] | None = None  # the venue's collateral ratios

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            if not self._markets_loaded:
                await self._x.load_markets()
                self._markets_loaded = True
            return await getattr(self._x, method)(*args, **kwargs)
        except ccxt.RateLimitExceeded as err:  # a NetworkError in ccxt's tree, but the venue said no
            raise VenueRejected(venue_reason(err, self._creds)) from None
        except (ccxt.NetworkError, asyncio.TimeoutError) as err:
            raise VenueUnavailable(venue_reason(err, self._creds)) from None
        except ccxt.BaseError as err:
            raise VenueRejected(venue_reason(err, self._creds)) from None

    # -- the account ------------------------------------------------------------------------
    async def fetch_state(self, now_ms: int) -> VenueState:
        if self._tiers is None:  # published, rarely changed: read once per run
            raw = await self._call("publicGetV5SpotMarginTradeCollateral")
            self._tiers = bybit_collateral_tiers(raw.get("result") or {})
        balance = await self._call("fetch_balance")
        self._positions = await self._call("fetch_positions", None, {"category": "linear", "settleCoin": "USDT"})
        wallet = (balance["info"].get("result", {}).get("list") or [{}])[0]
        return bybit_unified_state(wallet, self._positions, now_ms, self._tiers)

    async def watch_state(self, now_ms: Callable[[], int]) -> VenueState:
        """The next balance update from the venue's private stream (ccxt.pro watch_balance),
        with the positions of the last REST sync."""
        balance = await self._call("watch_balance")
        wallet = (balance.get("info") or [{}])[0]
        return bybit_unified_state(wallet, self._positions, now_ms(), self._tiers)

    # -- orders -----------------------------------------------------------------------------
    async def rounded(self, symbol: str, amount: float, price: float) -> tuple[float, float]:
        """Amount and price on the market's grid; an order under the market's minimums is refused here."""
        if not self._markets_loaded:
            await self._call("load_markets")
        try:
            market = self._x.market(symbol)
            qty = float(self._x.amount_to_precision(symbol, amount))
            px = float(self._x.price_to_precision(symbol, price))
        except ccxt.BaseError as err:
            raise VenueRejected(venue_reason(err, self._creds)) from None
        limits = market.get("limits") or {}
        min_qty = (limits.get("amount") or {}).get("min") or 0.0
        min_cost = (limits.get("cost") or {}).get("min") or 0.0
        if qty <= 0 or qty < min_qty or qty * px < min_cost:
            raise VenueRejected(f"below the market's minimum: {qty:g} {symbol} at {px:g} "
                                f"(min amount {min_qty:g}, min notional {min_cost:g})")
        return qty, px

    async def place(self, client_id: str, symbol: str, side: str, amount: float, price: float) -> VenueOrder:
        """A marketable limit order (immediate-or-cancel) at `price`, the slippage cap.

        Safe to call again with the same client id: on a timeout the order is looked up by
        its client id before anything is resent, and a venue that already has the id refuses
        a second order with it."""
        params: dict[str, Any] = {"timeInForce": "IOC", "clientOrderId": client_id}
        if ":" in symbol:  # a perpetual: the planner only ever cuts positions
            params["reduceOnly"] = True
        try:
            await self._call("create_order", symbol, "limit", side, amount, price, params)
        except VenueUnavailable:
            found = await self.find(client_id, symbol)
            if found is None:
                raise
            return await self._settled(found)
        except VenueRejected:
            found = await self.find(client_id, symbol, tries=1)  # "duplicate client id": it exists already
            if found is None:
                raise
        order = await self.find(client_id, symbol)
        if order is None:
            raise VenueUnavailable(f"order {client_id} accepted but not found on {self.venue}")
        return await self._settled(order)

    async def _settled(self, order: VenueOrder) -> VenueOrder:
        """An IOC order ends at once; one still open is cancelled (its remainder is re-planned, not left resting)."""
        if not order.final:
            await self._call("cancel_order", None, order.symbol, {"clientOrderId": order.client_id})
            order = await self.find(order.client_id, order.symbol) or order
        return order

    async def find(self, client_id: str, symbol: str, tries: int = LOOKUP_TRIES) -> VenueOrder | None:
        for attempt in range(tries):
            for method in ("fetch_open_orders", "fetch_canceled_and_closed_orders"):
                found = await self._call(method, symbol, None, None, {"orderLinkId": client_id})
                for raw in found:
                    if raw.get("clientOrderId") == client_id:
                        return self._order(raw)
            if attempt + 1 < tries:
                await asyncio.sleep(0.05 * 2 ** attempt)
        return None

    async def orders_with_prefix(self, prefix: str) -> list[VenueOrder]:
        """Open and recent orders whose client id starts with `prefix` (reconciliation)."""
        out: dict[str, VenueOrder] = {}
        for method in ("fetch_canceled_and_closed_orders", "fetch_open_orders"):
            for raw in await self._call(method, None, None, None, {"type": "spot"}):
                cid = raw.get("clientOrderId") or ""
                if cid.startswith(prefix):
                    out[cid] = self._order(raw)
        return [out[k] for k in sorted(out)]

    async def repay(self, asset: str, amount: float) -> None:
        """Margin repay from the account's own balance of `asset`. A unified account nets each
        coin by itself (Bybit UTA: a coin's balance and liability are one signed walletBalance),
        so there is nothing to call."""
        if self.venue in NETTING_VENUES:
            return
        await self._call("repay_cross_margin", asset, amount)

    async def accounted_orders(self, prefix: str) -> list[VenueOrder]:
        """Orders with the client-id prefix, none left resting: a resting remainder would fill
        on stale terms, so it is cancelled (the account is planned again instead)."""
        orders = await self.orders_with_prefix(prefix)
        out = []
        for o in orders:
            if not o.final:
                await self.cancel(o)
                o = await self.find(o.client_id, o.symbol) or o
            out.append(o)
        return out

    async def cancel(self, order: VenueOrder) -> None:
        await self._call("cancel_order", None, order.symbol, {"clientOrderId": order.client_id})

    def _order(self, raw: dict[str, Any]) -> VenueOrder:
        filled = float(raw.get("filled") or 0.0)
        average = raw.get("average")
        fee = raw.get("fee") or {}
        cost = float(fee.get("cost") or 0.0)
        base = raw["symbol"].split("/")[0]
        if fee.get("currency") == base and average:
            cost *= float(average)  # a buy pays its fee in the base coin: value it in quote units
        return VenueOrder(raw.get("clientOrderId") or "", raw["symbol"], raw["side"], float(raw.get("amount") or 0.0),
                          filled, float(average) if average else None, cost, raw.get("status") or "open")

    async def close(self) -> None:
        await self._x.close()
