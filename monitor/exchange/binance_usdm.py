"""Binance USDⓈ-M futures in Multi-Assets mode: the futures account (margin assets' wallet
balances, positions, the margin ratio and its totals) in one request, the haircuts Binance
publishes for margin assets and the account's leverage brackets (read hourly), reduce-only
perpetual orders by newClientOrderId, and the user-data stream (ACCOUNT_UPDATE: balances and
positions as they change). ccxt's sandbox mode is Binance's futures testnet. The account trades
perpetuals only: its strategy cuts positions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from monitor.config import linear_perpetual
from monitor.exchange.binance import refresh_due
from monitor.exchange.gateway import ExchangeGateway, VenueRejected
from monitor.exchange.venues import (VenuePosition, VenueState, binance_asset_haircuts, binance_leverage_brackets,
                                     binance_usdm_state)
from monitor.risk.tiers import Tiers


class BinanceUsdmGateway(ExchangeGateway):
    # Only endpoints a futures key with trade permission reaches (no wallet-wide currency list).
    ccxt_options = {"fetchCurrencies": False, "fetchMargins": False,
                    "watchPositions": {"fetchPositionsSnapshot": False}}  # our own REST sync is the snapshot
    nets_coins = True  # a margin asset's wallet balance is signed; there is nothing to repay
    streams = {"balance": "watch_balance", "positions": "watch_positions"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.perps = tuple(sorted({linear_perpetual(s) for s in self.symbols}))
        self._tiers: dict[str, Tiers] = {}  # margin assets' haircuts
        self._brackets: dict[str, Tiers] = {}  # each perpetual's maintenance brackets
        self._terms_ms: int | None = None
        self._state = VenueState({})  # the last REST sync, then the stream's changes on top

    async def fetch_state(self, now_ms: int) -> VenueState:
        symbol_of = {m["id"]: m["symbol"] for m in (await self._markets()).values() if m.get("linear")}
        if refresh_due(self._terms_ms, now_ms):
            await self._read_terms(symbol_of)
            self._terms_ms = now_ms
        balance = await self._call("fetch_balance")
        self._state = binance_usdm_state(balance["info"], symbol_of, now_ms, self._tiers, self._brackets)
        self.resync_wanted = False
        return self._state

    async def _markets(self) -> dict[str, Any]:
        if not self._markets_loaded:
            await self._call("load_markets")
        return self._x.markets

    async def _read_terms(self, symbol_of: dict[str, str]) -> None:
        """The account's mode, the haircuts and the leverage brackets: published, rarely changed."""
        mode = await self._call("fapiPrivateGetMultiAssetsMargin")
        if not mode.get("multiAssetsMargin"):
            raise VenueRejected("the USDⓈ-M futures account is in single-asset mode: switch it to "
                                "Multi-Assets mode (Preferences > Asset Mode) so all margin assets count")
        self._tiers = binance_asset_haircuts(await self._call("fapiPublicGetAssetIndex"))
        self._brackets = binance_leverage_brackets(await self._call("fapiPrivateGetLeverageBracket"), symbol_of)

    def _on_update(self, topic: str, update: Any) -> None:
        """ACCOUNT_UPDATE through ccxt: `balance` carries the event as it came (the wallet
        balance of each asset that changed); `positions` the positions that changed, a closed
        one with 0 contracts. Between syncs a missed event is healed by the next REST sync."""
        state = self._state
        if topic == "balance":
            changed = ((update.get("info") or {}).get("a") or {}).get("B") or []
            holdings = dict(state.holdings)
            for entry in changed:
                holdings[str(entry.get("a"))] = float(entry.get("wb") or 0.0)
            self._state = replace(state, holdings={a: x for a, x in holdings.items() if x})
            return
        by_symbol = {p.symbol: p for p in state.positions}
        for p in update:
            old = by_symbol.pop(p["symbol"], None)
            size = float(p.get("contracts") or 0.0) * (-1.0 if p.get("side") == "short" else 1.0)
            if size == 0:
                continue
            mmr = self._brackets.get(p["symbol"]) or (old.mmr if old is not None else None)
            if mmr is None:  # a symbol without brackets: its maintenance rate comes with a REST sync
                self.resync_wanted = True
            by_symbol[p["symbol"]] = VenuePosition(p["symbol"], size, float(p.get("entryPrice") or 0.0), mmr or 0.0)
        self._state = replace(state, positions=tuple(by_symbol.values()))

    def _streamed_state(self, now_ms: int) -> VenueState:
        # The event has no account totals: nothing to check drift or calibrate against until the next sync.
        return replace(self._state, native=None, totals=None, ts_ms=now_ms)

    async def _lookup(self, client_id: str, symbol: str) -> list[dict[str, Any]]:
        return [await self._call("fetch_order", None, symbol, {"clientOrderId": client_id})]

    async def _recent(self) -> list[dict[str, Any]]:
        out = []
        for symbol in self.perps:  # Binance lists orders per market
            out += await self._call("fetch_orders", symbol)
        return out
