"""target_weights: keep collateral shares at targets, within a band.

params: weights = {ASSET: share of total collateral value} (shares sum <= 1;
assets not listed, and stables, are not traded) and band (default 0.05). An
asset whose share is outside target +/- band is traded back to its target:
sells first, into the account's stable; then buys, paid only with those
proceeds (no borrowing). The plan stands only if it raises health; the level's
target health is informational here.
"""

from __future__ import annotations

import math
from typing import Any

from monitor.model import Order, Plan
from monitor.risk.portfolio import AccountBook
from strategies.base import Market, PlanRequest
from strategies.legs import spot_symbol
from strategies.sizing import Draft, Leg


def param_error(params: dict[str, Any]) -> str | None:
    """What is wrong with the strategy's params (None if they are usable); for check-config."""
    unknown = sorted(set(params) - {"weights", "band"})
    if unknown:
        return f"target_weights: unknown param {unknown[0]!r} (known: weights, band)"
    weights = params.get("weights")
    if not isinstance(weights, dict) or not weights:
        return "target_weights needs params.weights = {ASSET = share, ...}"
    bad = [a for a, w in weights.items() if not isinstance(w, int | float) or not 0 <= w <= 1]
    if bad:
        return f"target_weights: the share of {bad[0]} must be a number between 0 and 1"
    if sum(weights.values()) > 1 + 1e-9:
        return f"target_weights: shares sum to {sum(weights.values()):g}, more than 1"
    band = params.get("band", 0.05)
    if not isinstance(band, int | float) or not 0 <= band < 1:
        return "target_weights: band must be a number in [0, 1)"
    return None


class TargetWeights:
    name = "target_weights"

    @staticmethod
    def check_params(params: dict[str, Any]) -> str | None:
        return param_error(params)

    def check(self, book: AccountBook, stables: frozenset[str], markets: dict[str, Market]) -> str | None:
        if book.model == "margin_level":
            return ("on a margin_level account every asset counts at 100%: shifting collateral between "
                    "assets cannot raise the margin level")
        return None

    def plan(self, request: PlanRequest) -> Plan:
        draft = Draft(request)
        error = param_error(request.params)
        if error:
            return draft.empty(self.name, error)
        mv, book = request.market, request.book
        values = {a: e.qty * mv.prices[a] for a, e in book.exposures.items() if e.qty > 0 and a in mv.prices}
        total = sum(values.values())
        if total <= 0:
            return draft.empty(self.name, "no collateral to rebalance")
        weights = {a: float(w) for a, w in request.params["weights"].items()}
        band = float(request.params.get("band", 0.05))
        funds: dict[str, float] = {}
        for asset, share in weights.items():
            if values.get(asset, 0.0) / total > share + band:
                self._sell(draft, asset, (values[asset] - share * total) / mv.prices[asset], funds)
        deficits = {a: share * total - values.get(a, 0.0) for a, share in weights.items()
                    if values.get(a, 0.0) / total < share - band}
        for asset in sorted(deficits, key=lambda a: (-deficits[a], a)):
            self._buy(draft, asset, deficits[asset] / mv.prices[asset] if mv.prices.get(asset) else 0.0, funds)
        if not draft.orders:
            return draft.empty(self.name, "; ".join(["every share is within its band", *draft.notes]))
        return draft.finish(self.name, "rebalancing to the target weights would not raise health", report_target=False)

    @staticmethod
    def _tradable(draft: Draft, asset: str) -> tuple[Market, str] | None:
        """The asset's market and the stable it trades against, or None (with a note)."""
        mv, req = draft.market, draft.request
        market = mv.markets.get(asset)
        if asset in mv.stables or market is None:
            draft.note(f"{asset}: a stable or without a market, not traded")
            return None
        stable = req.stable or market.quote
        if stable not in mv.stables or mv.prices.get(stable, 0.0) <= 0:
            draft.note(f"{asset}: no stable to trade it against")
            return None
        return market, stable

    def _sell(self, draft: Draft, asset: str, amount: float, funds: dict[str, float]) -> None:
        found = self._tradable(draft, asset)
        if found is None:
            return
        market, stable = found
        mv = draft.market
        price = mv.sell_price(asset) / mv.prices[stable]
        held = draft.book.exposures[asset].qty
        leg = Leg(f"sell {asset}", held, (), lambda x: ([], []), market.lot_size, market.min_notional, price)
        x = draft.fit(leg, amount)
        if x <= 0:
            return
        draft.add([Order(spot_symbol(market, stable), "sell", x, price, asset, stable)], [])
        funds[stable] = funds.get(stable, 0.0) + x * price * (1 - mv.fee_rate)

    def _buy(self, draft: Draft, asset: str, amount: float, funds: dict[str, float]) -> None:
        found = self._tradable(draft, asset)
        if found is None or amount <= 0:
            return
        market, stable = found
        mv = draft.market
        price = mv.buy_price(asset) / mv.prices[stable]
        # Only the sale proceeds pay, a hair under them so float noise never borrows.
        affordable = funds.get(stable, 0.0) / (price * (1 + mv.fee_rate)) * (1 - 1e-12)
        if affordable <= 0 or not math.isfinite(affordable):
            draft.note(f"buy {asset}: no sale proceeds in {stable} to pay with")
            return
        leg = Leg(f"buy {asset}", affordable, (), lambda x: ([], []), market.lot_size, market.min_notional, price)
        x = draft.fit(leg, min(amount, affordable), up=False)
        if x <= 0:
            return
        draft.add([Order(spot_symbol(market, stable), "buy", x, price, asset, stable)], [])
        funds[stable] -= x * price * (1 + mv.fee_rate)
