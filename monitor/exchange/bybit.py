"""Bybit v5 unified trading account (UTA): wallet balance, linear positions, tiered collateral
ratios, the private `wallet` stream; orders looked up by orderLinkId; top-ups from the FUND
wallet by inter-transfer with a caller-chosen transferId."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from monitor.exchange.gateway import ExchangeGateway
from monitor.exchange.venues import VenueState, bybit_collateral_tiers, bybit_transferable, bybit_unified_state


class BybitGateway(ExchangeGateway):
    # The account model says unified: skip ccxt's key-info probe (it needs extra permissions).
    ccxt_options = {"enableUnifiedAccount": True, "enableUnifiedMargin": False,
                    "fetchMarkets": {"types": ["spot", "linear"]}, "defaultType": "spot"}
    nets_coins = True  # a coin's balance and liability are one signed walletBalance
    has_stream = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._positions: list[dict[str, Any]] = []  # as of the last REST sync (the stream carries balances)
        self._tiers: dict[str, tuple[tuple[float, float], ...]] | None = None  # the venue's collateral ratios
        self._reserve: dict[str, float] = {}  # the reserve wallet as of the last REST sync

    async def fetch_state(self, now_ms: int) -> VenueState:
        if self._tiers is None:  # published, rarely changed: read once per run
            raw = await self._call("publicGetV5SpotMarginTradeCollateral")
            self._tiers = bybit_collateral_tiers(raw.get("result") or {})
        balance = await self._call("fetch_balance")
        self._positions = await self._call("fetch_positions", None, {"category": "linear", "settleCoin": "USDT"})
        wallet = (balance["info"].get("result", {}).get("list") or [{}])[0]
        if self.reserve_wallet:
            self._reserve = await self.fetch_reserve()
        return self._state(wallet, now_ms)

    def _state(self, wallet: dict[str, Any], now_ms: int) -> VenueState:
        """The wallet as given, with the positions and reserve of the last REST sync."""
        return replace(bybit_unified_state(wallet, self._positions, now_ms, self._tiers), reserve=self._reserve)

    async def fetch_reserve(self) -> dict[str, float]:
        """GET /v5/asset/transfer/query-account-coins-balance (accountType FUND): what each coin
        could transfer now (transferBalance)."""
        balance = await self._call("fetch_balance", {"type": self.reserve_wallet})
        return bybit_transferable(balance["info"].get("result") or {})

    def _transfer_params(self, transfer_id: str) -> dict[str, Any]:
        return {"transferId": transfer_id}  # POST /v5/asset/transfer/inter-transfer: a UUID, unique per transfer

    async def watch_state(self, now_ms: Callable[[], int]) -> VenueState:
        """The next balance update from the private stream (ccxt.pro watch_balance)."""
        balance = await self._call("watch_balance")
        wallet = (balance.get("info") or [{}])[0]
        return self._state(wallet, now_ms())

    async def _lookup(self, client_id: str, symbol: str) -> list[dict[str, Any]]:
        out = []
        for method in ("fetch_open_orders", "fetch_canceled_and_closed_orders"):
            out += await self._call(method, symbol, None, None, {"orderLinkId": client_id})
        return out

    async def _recent(self) -> list[dict[str, Any]]:
        out = []
        for method in ("fetch_canceled_and_closed_orders", "fetch_open_orders"):
            out += await self._call(method, None, None, None, {"type": "spot"})
        return out
