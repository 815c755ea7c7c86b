"""Bybit v5 unified trading account (UTA): wallet balance, linear positions, tiered collateral
ratios, the private `wallet` and `position` streams; orders looked up by orderLinkId; top-ups from the FUND
wallet by inter-transfer with a caller-chosen transferId."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from monitor.exchange.gateway import ExchangeGateway, merge_positions
from monitor.exchange.venues import VenueState, bybit_collateral_tiers, bybit_transferable, bybit_unified_state
from monitor.risk.tiers import Tiers


class BybitGateway(ExchangeGateway):
    # The account model says unified: skip ccxt's key-info probe (it needs extra permissions).
    # The position stream starts from our own REST sync, not ccxt's snapshot (it also asks for
    # inverse positions, which a unified account's key may not read).
    ccxt_options = {"enableUnifiedAccount": True, "enableUnifiedMargin": False,
                    "fetchMarkets": {"types": ["spot", "linear"]}, "defaultType": "spot",
                    "watchPositions": {"fetchPositionsSnapshot": False}}
    nets_coins = True  # a coin's balance and liability are one signed walletBalance
    streams = {"wallet": "watch_balance", "position": "watch_positions"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._positions: list[dict[str, Any]] = []  # ccxt positions: the last REST sync, then stream updates
        self._tiers: dict[str, Tiers] | None = None  # the venue's collateral ratios
        self._reserve: dict[str, float] = {}  # the reserve wallet as of the last REST sync
        self._wallet: dict[str, Any] = {}  # the last wallet seen (REST or stream)

    async def fetch_state(self, now_ms: int) -> VenueState:
        if self._tiers is None:  # published, rarely changed: read once per run
            raw = await self._call("publicGetV5SpotMarginTradeCollateral")
            self._tiers = bybit_collateral_tiers(raw.get("result") or {})
        balance = await self._call("fetch_balance")
        self._positions = await self._call("fetch_positions", None, {"category": "linear", "settleCoin": "USDT"})
        self._wallet = (balance["info"].get("result", {}).get("list") or [{}])[0]
        if self.reserve_wallet:
            self._reserve = await self.fetch_reserve()
        return self._streamed_state(now_ms)

    def _streamed_state(self, now_ms: int) -> VenueState:
        """The last wallet and positions seen, with the reserve of the last REST sync."""
        return replace(bybit_unified_state(self._wallet, self._positions, now_ms, self._tiers), reserve=self._reserve)

    async def fetch_reserve(self) -> dict[str, float]:
        """GET /v5/asset/transfer/query-account-coins-balance (accountType FUND): what each coin
        could transfer now (transferBalance)."""
        balance = await self._call("fetch_balance", {"type": self.reserve_wallet})
        return bybit_transferable(balance["info"].get("result") or {})

    def _transfer_params(self, transfer_id: str) -> dict[str, Any]:
        return {"transferId": transfer_id}  # POST /v5/asset/transfer/inter-transfer: a UUID, unique per transfer

    def _on_update(self, topic: str, update: Any) -> None:
        """`wallet` (ccxt.pro watch_balance): the whole wallet; `position` (watch_positions): what changed."""
        if topic == "wallet":
            self._wallet = (update.get("info") or [{}])[0]
        else:
            self._positions = merge_positions(self._positions, update)

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
