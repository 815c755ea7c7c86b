"""Bybit v5 unified trading account (UTA): wallet balance, linear positions, the published
schedules (tiered collateral ratios, loan maintenance tiers, perpetual risk limits), the private
`wallet` and `position` streams; orders looked up by orderLinkId; top-ups from the FUND wallet by
inter-transfer with a caller-chosen transferId."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import structlog

from monitor.exchange.gateway import ExchangeGateway, VenueRejected, merge_positions
from monitor.exchange.venues import (VenueState, bybit_borrow_tiers, bybit_collateral_tiers, bybit_risk_limit_tiers,
                                     bybit_transferable, bybit_unified_state)
from monitor.risk.tiers import Tiers

log = structlog.get_logger("sync")
SCHEDULES_EVERY_MS = 3_600_000  # Bybit's published tiers rarely change: read again hourly


class BybitGateway(ExchangeGateway):
    # The account model says unified: skip ccxt's key-info probe (it needs extra permissions).
    # The position stream starts from our own REST sync, not ccxt's snapshot (it also asks for
    # inverse positions, which a unified account's key may not read).
    ccxt_options = {"enableUnifiedAccount": True, "enableUnifiedMargin": False,
                    "fetchMarkets": {"types": ["spot", "linear"]}, "defaultType": "spot",
                    "watchPositions": {"fetchPositionsSnapshot": False}}
    # Bybit nets each coin in its equity (walletBalance - spotBorrow), which is what its MM rate
    # counts: a sale's proceeds lower the net liability without a repay call.
    nets_coins = True
    streams = {"wallet": "watch_balance", "position": "watch_positions"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._positions: list[dict[str, Any]] = []  # ccxt positions: the last REST sync, then stream updates
        self._tiers: dict[str, Tiers] = {}  # the venue's collateral ratios
        self._borrow_tiers: dict[str, Tiers] = {}  # loan maintenance margin rates
        self._risk_limits: dict[str, Tiers | None] = {}  # Bybit symbol -> the perpetual's maintenance tiers
        self._schedules_ms: int | None = None  # when the schedules were read
        self._reserve: dict[str, float] = {}  # the reserve wallet as of the last REST sync
        self._wallet: dict[str, Any] = {}  # the last wallet seen (REST or stream)

    async def fetch_state(self, now_ms: int) -> VenueState:
        await self._read_schedules(now_ms)
        balance = await self._call("fetch_balance")
        self._positions = await self._call("fetch_positions", None, {"category": "linear", "settleCoin": "USDT"})
        await self._read_risk_limits()
        self._wallet = (balance["info"].get("result", {}).get("list") or [{}])[0]
        if self.reserve_wallet:
            self._reserve = await self.fetch_reserve()
        return self._streamed_state(now_ms)

    async def _read_schedules(self, now_ms: int) -> None:
        """Collateral ratios and loan maintenance tiers, once a run and then hourly; the risk
        limits are read again (per symbol held) after each such refresh."""
        if self._schedules_ms is not None and now_ms - self._schedules_ms < SCHEDULES_EVERY_MS:
            return
        raw = await self._call("publicGetV5SpotMarginTradeCollateral")
        self._tiers = bybit_collateral_tiers(raw.get("result") or {})
        try:
            raw = await self._call("privateGetV5SpotMarginTradePositionTiers")
            self._borrow_tiers = bybit_borrow_tiers(raw.get("result") or {})
        except VenueRejected as err:  # a key the endpoint refuses: the config's borrow_mmr, calibrated
            log.warning("loan maintenance tiers unavailable: the config's borrow_mmr is used", account=self.account,
                        venue=self.venue, error=err.reason)
        self._risk_limits = {}
        self._schedules_ms = now_ms

    async def _read_risk_limits(self) -> None:
        """GET /v5/market/risk-limit for each perpetual held whose tiers are not known yet."""
        for symbol in sorted({str(p["info"].get("symbol")) for p in self._positions} - set(self._risk_limits)):
            raw = await self._call("publicGetV5MarketRiskLimit", {"category": "linear", "symbol": symbol})
            # None when Bybit lists none: the position's own rate then, and not asked again until the refresh.
            self._risk_limits[symbol] = bybit_risk_limit_tiers((raw.get("result") or {}).get("list") or []).get(symbol)
        self.resync_wanted = False

    def _streamed_state(self, now_ms: int) -> VenueState:
        """The last wallet and positions seen, with the reserve of the last REST sync."""
        risk_limits = {s: t for s, t in self._risk_limits.items() if t is not None}
        state = bybit_unified_state(self._wallet, self._positions, now_ms, self._tiers, self._borrow_tiers, risk_limits)
        return replace(state, reserve=self._reserve)

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
            return
        self._positions = merge_positions(self._positions, update)
        if {str(p["info"].get("symbol")) for p in self._positions} - set(self._risk_limits):
            self.resync_wanted = True  # a new perpetual: its risk limits come with a REST sync, taken at once

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
