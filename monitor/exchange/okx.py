"""OKX v5 multi-currency margin: the trading account's balance (each coin netted, the account
margin ratio), perpetual swap positions, the published discount-rate tiers, and the private
`account` and `positions` channels; spot orders in cross mode looked up by clOrdId. OKX's
demo trading (ccxt's sandbox mode: the `x-simulated-trading: 1` header, the wspap host) is
the testnet. API keys come with a passphrase."""

from __future__ import annotations

from typing import Any

from monitor.exchange.gateway import ExchangeGateway, merge_positions
from monitor.exchange.venues import VenueState, okx_discount_tiers, okx_multi_currency_state
from monitor.risk.tiers import Tiers


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
        self._tiers: dict[str, Tiers] | None = None
        self._account: dict[str, Any] = {}  # the last balance seen (REST or stream)
        self._positions: list[dict[str, Any]] = []  # ccxt positions: the last REST sync, then stream updates

    async def fetch_state(self, now_ms: int) -> VenueState:
        if self._tiers is None:  # published, rarely changed: read once per run
            raw = await self._call("publicGetPublicDiscountRateInterestFreeQuota")
            self._tiers = okx_discount_tiers(raw.get("data") or [])
        balance = await self._call("fetch_balance")
        self._positions = await self._call("fetch_positions", None, {"instType": "SWAP"})
        self._account = (balance["info"].get("data") or [{}])[0]
        return self._streamed_state(now_ms)

    def _streamed_state(self, now_ms: int) -> VenueState:
        return okx_multi_currency_state(self._account, self._positions, now_ms, self._tiers)

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
