"""OKX v5 multi-currency margin: the trading account's balance (each coin netted, the account
margin ratio), perpetual swap positions, the published discount-rate and position tiers (swaps by
instrument family, borrowings by coin), and the private `account` and `positions` channels; spot
orders in cross mode looked up by clOrdId. OKX's demo trading (ccxt's sandbox mode: the
`x-simulated-trading: 1` header, the wspap host) is the testnet. API keys come with a passphrase."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from monitor.exchange.gateway import ExchangeGateway, merge_positions
from monitor.exchange.venues import (OkxTierRows, VenueState, okx_borrowed, okx_discount_tiers,
                                     okx_multi_currency_state, okx_tier_rows)

# Published schedules rarely change (OKX announces tier changes days ahead): read once, then hourly.
PUBLISHED_REFRESH_S = 3600.0


class OkxGateway(ExchangeGateway):
    # Spot to trade, swaps to read positions; one order per request (POST /api/v5/trade/order,
    # not ccxt's default batch endpoint). tdMode cross: a spot order in the margin account.
    ccxt_options = {"fetchMarkets": {"types": ["spot", "swap"]}, "defaultType": "spot",
                    "createOrder": "privatePostTradeOrder"}
    order_params = {"marginMode": "cross"}
    nets_coins = True  # a borrowed coin is a negative cashBal; buying it back repays it
    streams = {"account": "watch_balance", "positions": "watch_positions"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # ccxt would read the currency list from a private asset endpoint the key need not reach.
        self._x.has["fetchCurrencies"] = False
        self._published: dict[tuple[str, str], tuple[float, Any]] = {}  # (kind, key) -> (read at, parsed)
        self._account: dict[str, Any] = {}  # the last balance seen (REST or stream)
        self._positions: list[dict[str, Any]] = []  # ccxt positions: the last REST sync, then stream updates

    async def fetch_state(self, now_ms: int) -> VenueState:
        balance = await self._call("fetch_balance")
        self._positions = await self._call("fetch_positions", None, {"instType": "SWAP"})
        self._account = (balance["info"].get("data") or [{}])[0]
        await self._cached("discount", "", self._discount_tiers)
        for family in {self._family(p["symbol"]) for p in self._positions}:
            await self._cached("swap", family, lambda f=family: self._tier_rows(instType="SWAP", instFamily=f))
        for ccy in self._borrowed():
            await self._cached("borrow", ccy, lambda c=ccy: self._tier_rows(instType="MARGIN", ccy=c))
        return self._streamed_state(now_ms)

    @property
    def resync_wanted(self) -> bool:
        """A streamed position or liability whose tiers only a REST sync reads."""
        return (any(("swap", self._family(p["symbol"])) not in self._published for p in self._positions)
                or any(("borrow", c) not in self._published for c in self._borrowed()))

    def _streamed_state(self, now_ms: int) -> VenueState:
        swaps = {p["symbol"]: self._known("swap", self._family(p["symbol"])) for p in self._positions}
        borrows = {c: self._known("borrow", c) for c in self._borrowed()}
        return okx_multi_currency_state(self._account, self._positions, now_ms, self._known("discount", "") or {},
                                        {s: r for s, r in swaps.items() if r}, {c: r for c, r in borrows.items() if r})

    # -- published tiers (public endpoints, through ccxt's implicit API) ----------------------
    async def _cached(self, kind: str, key: str, read: Callable[[], Awaitable[Any]]) -> None:
        seen = self._published.get((kind, key))
        if seen is None or time.monotonic() - seen[0] > PUBLISHED_REFRESH_S:
            self._published[(kind, key)] = (time.monotonic(), await read())

    def _known(self, kind: str, key: str) -> Any:
        seen = self._published.get((kind, key))
        return seen[1] if seen else None

    async def _discount_tiers(self) -> Any:
        raw = await self._call("publicGetPublicDiscountRateInterestFreeQuota")
        return okx_discount_tiers(raw.get("data") or [])

    async def _tier_rows(self, **params: str) -> OkxTierRows:
        """GET /api/v5/public/position-tiers, cross margin: a swap family's tiers (in contracts) or a
        coin's borrowing tiers in multi-currency margin (`ccy`: "the borrowing amount")."""
        raw = await self._call("publicGetPublicPositionTiers", {"tdMode": "cross", **params})
        return okx_tier_rows(raw.get("data") or [])

    def _family(self, symbol: str) -> str:
        """The instrument family a swap's tiers are published under (BTC-USDT for BTC-USDT-SWAP)."""
        info = ((self._x.markets or {}).get(symbol) or {}).get("info") or {}
        return str(info.get("instFamily") or info.get("uly") or symbol)

    def _borrowed(self) -> list[str]:
        return okx_borrowed(self._account)

    def _on_update(self, topic: str, update: Any) -> None:
        """`account` (ccxt.pro watch_balance; the raw push in `info`): a snapshot holds every
        coin, an event only the coins that changed, with the account's totals either way.
        `positions` (watch_positions): the positions that changed; only swaps are kept, as a
        REST sync reads them (ccxt subscribes to every instrument type)."""
        if topic == "positions":
            swaps = [p for p in update if (p.get("info") or {}).get("instType") == "SWAP"]
            self._positions = merge_positions(self._positions, swaps)
            return
        push = update.get("info") or {}
        account = (push.get("data") or [{}])[0]
        if push.get("eventType") != "snapshot":
            coins = {d.get("ccy"): d for d in self._account.get("details") or []}
            coins.update({d.get("ccy"): d for d in account.get("details") or []})
            account = {**account, "details": list(coins.values())}
        self._account = account

    async def _lookup(self, client_id: str, symbol: str) -> list[dict[str, Any]]:
        return [await self._call("fetch_order", None, symbol, {"clientOrderId": client_id})]

    async def _recent(self) -> list[dict[str, Any]]:
        out = []
        for method in ("fetch_open_orders", "fetch_closed_orders", "fetch_canceled_orders"):
            out += await self._call(method, None, None, None, {"type": "spot"})
        return out
