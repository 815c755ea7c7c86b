"""Binance classic cross margin: the margin account (assets, liabilities with interest, the margin
level and its totals), the account's liquidation bar, margin orders by newClientOrderId, repay.
Binance lists margin orders per market, so reconciliation walks the account's markets. Binance's
spot testnet has no margin endpoints: these accounts run in dry_run (a read-only key is enough)
or live."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from monitor.exchange.gateway import ExchangeGateway, VenueRejected
from monitor.exchange.venues import (VenueState, binance_margin_liquidation_bar, binance_margin_state,
                                     binance_margin_totals)

REFRESH_MS = 3_600_000  # terms the venue publishes and rarely changes are read again hourly


def refresh_due(last_ms: int | None, now_ms: int) -> bool:
    """Whether published terms read at `last_ms` (None: never) are due to be read again."""
    return last_ms is None or now_ms - last_ms >= REFRESH_MS


class BinanceMarginGateway(ExchangeGateway):
    # Spot markets only, and none of the endpoints that need more than margin/trade permissions.
    ccxt_options = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False,
                    "defaultType": "spot"}
    order_params = {"marginMode": "cross"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._bar: float | None = None  # the account's forceLiquidationBar
        self._bar_ms: int | None = None

    async def fetch_state(self, now_ms: int) -> VenueState:
        info = (await self._call("fetch_balance", {"marginMode": "cross"}))["info"]
        if info.get("accountType") == "MARGIN_2":
            # Cross Margin Pro's margin level is net collateral / maintenance margin, liquidated at
            # 1.0 (FAQ "Introduction to Binance Cross Margin Pro"): not the margin_level model.
            raise VenueRejected("the cross margin account is in Cross Margin Pro mode, whose margin level is "
                                "net collateral / maintenance margin: switch it to Cross Margin Classic")
        if refresh_due(self._bar_ms, now_ms):
            self._bar = binance_margin_liquidation_bar(await self._call("sapiGetMarginTradeCoeff"))
            self._bar_ms = now_ms
        state = binance_margin_state(info, now_ms, self._bar)
        if state.native is None:
            return state  # nothing owed: no totals to calibrate against
        index = await self._call("sapiGetMarginPriceIndex", {"symbol": "BTCUSDT"})
        btc = float(index.get("price") or 0.0)
        return replace(state, totals=binance_margin_totals(info, btc)) if btc > 0 else state

    async def _lookup(self, client_id: str, symbol: str) -> list[dict[str, Any]]:
        return [await self._call("fetch_order", None, symbol, {"clientOrderId": client_id, **self.order_params})]

    async def _recent(self) -> list[dict[str, Any]]:
        out = []
        for symbol in self.symbols:
            out += await self._call("fetch_orders", symbol, None, None, dict(self.order_params))
        return out
