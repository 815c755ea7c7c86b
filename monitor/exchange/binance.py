"""Binance classic cross margin: the margin account (assets, liabilities with interest, the margin
level), margin orders by newClientOrderId, repay. Binance lists margin orders per market, so
reconciliation walks the account's markets. Binance's spot testnet has no margin endpoints:
these accounts run in dry_run (a read-only key is enough) or live."""

from __future__ import annotations

from typing import Any

from monitor.exchange.gateway import ExchangeGateway
from monitor.exchange.venues import VenueState, binance_margin_state


class BinanceMarginGateway(ExchangeGateway):
    # Spot markets only, and none of the endpoints that need more than margin/trade permissions.
    ccxt_options = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False,
                    "defaultType": "spot"}
    order_params = {"marginMode": "cross"}

    async def fetch_state(self, now_ms: int) -> VenueState:
        balance = await self._call("fetch_balance", {"marginMode": "cross"})
        return binance_margin_state(balance["info"], now_ms)

    async def _lookup(self, client_id: str, symbol: str) -> list[dict[str, Any]]:
        return [await self._call("fetch_order", None, symbol, {"clientOrderId": client_id, **self.order_params})]

    async def _recent(self) -> list[dict[str, Any]]:
        out = []
        for symbol in self.symbols:
            out += await self._call("fetch_orders", symbol, None, None, dict(self.order_params))
        return out
