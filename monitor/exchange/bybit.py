"""Bybit v5 unified trading account (UTA): wallet balance, linear positions, tiered collateral
ratios, the private `wallet` and `position` streams; orders looked up by orderLinkId; top-ups from the FUND
wallet by inter-transfer with a caller-chosen transferId."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from monitor.exchange.gateway import ExchangeGateway
from monitor.exchange.venues import VenueState, bybit_collateral_tiers, bybit_transferable, bybit_unified_state


class BybitGateway(ExchangeGateway):
    # The account model says unified: skip ccxt's key-info probe (it needs extra permissions).
    # The position stream starts from our own REST sync, not ccxt's snapshot (it also asks for
    # inverse positions, which a unified account's key may not read).
    ccxt_options = {"enableUnifiedAccount": True, "enableUnifiedMargin": False,
                    "fetchMarkets": {"types": ["spot", "linear"]}, "defaultType": "spot",
                    "watchPositions": {"fetchPositionsSnapshot": False}}
    nets_coins = True  # a coin's balance and liability are one signed walletBalance
    has_stream = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._positions: list[dict[str, Any]] = []  # ccxt positions: the last REST sync, then stream updates
        self._tiers: dict[str, tuple[tuple[float, float], ...]] | None = None  # the venue's collateral ratios
        self._reserve: dict[str, float] = {}  # the reserve wallet as of the last REST sync
        self._wallet: dict[str, Any] = {}  # the last wallet seen (REST or stream)
        self._streams = {"wallet": "watch_balance", "position": "watch_positions"}
        self._next: dict[str, asyncio.Future | None] = {}  # each stream's pending watch

    async def fetch_state(self, now_ms: int) -> VenueState:
        if self._tiers is None:  # published, rarely changed: read once per run
            raw = await self._call("publicGetV5SpotMarginTradeCollateral")
            self._tiers = bybit_collateral_tiers(raw.get("result") or {})
        balance = await self._call("fetch_balance")
        self._positions = await self._call("fetch_positions", None, {"category": "linear", "settleCoin": "USDT"})
        self._wallet = (balance["info"].get("result", {}).get("list") or [{}])[0]
        if self.reserve_wallet:
            self._reserve = await self.fetch_reserve()
        return self._state(self._wallet, now_ms)

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
        """The account after the next update of either private stream: `wallet` (ccxt.pro
        watch_balance) or `position` (watch_positions). Each watch stays pending across calls,
        so an update on one stream never drops the other's."""
        for topic in self._streams:
            if self._next.get(topic) is None:
                self._next[topic] = asyncio.ensure_future(self._call(self._streams[topic]))
        done, _ = await asyncio.wait(self._next.values(), return_when=asyncio.FIRST_COMPLETED)
        for topic, task in list(self._next.items()):
            if task in done:
                self._next[topic] = None
                update = task.result()  # a broken stream raises here: the caller reconnects
                if topic == "wallet":
                    self._wallet = (update.get("info") or [{}])[0]
                else:
                    self._merge_positions(update)
        return self._state(self._wallet, now_ms())

    def _merge_positions(self, updates: list[dict[str, Any]]) -> None:
        """Position updates carry only what changed; a closed position comes with size 0."""
        by_symbol = {p["symbol"]: p for p in self._positions}
        for p in updates:
            by_symbol[p["symbol"]] = p
        self._positions = [p for p in by_symbol.values() if p.get("contracts")]

    async def close(self) -> None:
        for task in self._next.values():
            if task is not None:
                task.cancel()
        await super().close()

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
