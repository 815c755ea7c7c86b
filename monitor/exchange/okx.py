"""OKX v5 multi-currency margin: the trading account's balance (each coin netted, the account
margin ratio), perpetual swap positions, the published discount-rate tiers; spot orders in
cross mode looked up by clOrdId. OKX's demo trading (ccxt's sandbox mode: the same hosts with
the `x-simulated-trading: 1` header) is the testnet. API keys come with a passphrase."""

from __future__ import annotations

from typing import Any

from monitor.exchange.gateway import ExchangeGateway
from monitor.exchange.venues import VenueState, okx_discount_tiers, okx_multi_currency_state


class OkxGateway(ExchangeGateway):
    # Spot to trade, swaps to read positions; one order per request (POST /api/v5/trade/order,
    # not ccxt's default batch endpoint). tdMode cross: a spot order in the margin account.
    ccxt_options = {"fetchMarkets": {"types": ["spot", "swap"]}, "defaultType": "spot",
                    "createOrder": "privatePostTradeOrder"}
    order_params = {"marginMode": "cross"}
    nets_coins = True  # a borrowed coin is a negative cashBal; buying it back repays it

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # ccxt would read the currency list from a private asset endpoint the key need not reach.
        self._x.has["fetchCurrencies"] = False
        self._tiers: dict[str, tuple[tuple[float, float], ...]] | None = None

    async def fetch_state(self, now_ms: int) -> VenueState:
        if self._tiers is None:  # published, rarely changed: read once per run
            raw = await self._call("publicGetPublicDiscountRateInterestFreeQuota")
            self._tiers = okx_discount_tiers(raw.get("data") or [])
        balance = await self._call("fetch_balance")
        positions = await self._call("fetch_positions", None, {"instType": "SWAP"})
        account = (balance["info"].get("data") or [{}])[0]
        return okx_multi_currency_state(account, positions, now_ms, self._tiers)

    async def _lookup(self, client_id: str, symbol: str) -> list[dict[str, Any]]:
        return [await self._call("fetch_order", None, symbol, {"clientOrderId": client_id})]

    async def _recent(self) -> list[dict[str, Any]]:
        out = []
        for method in ("fetch_open_orders", "fetch_closed_orders", "fetch_canceled_orders"):
            out += await self._call(method, None, None, None, {"type": "spot"})
        return out
