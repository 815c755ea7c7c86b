"""reduce_position: cut perpetual positions on a unified account, largest maintenance margin first.

Cutting a position releases its maintenance margin (the denominator) and turns
its unrealized pnl into a settled balance; slippage and the fee are the cost.
Orders go to the linear perpetual of the asset's market ("BTC/USDT:USDT"):
a sell cuts a long, a buy cuts a short. Sizes are solved for the target.
"""

from __future__ import annotations

from functools import partial

from monitor.model import Plan
from monitor.risk.portfolio import AccountBook
from strategies.base import Market, PlanRequest
from strategies.legs import perp_leg
from strategies.sizing import Draft


class ReducePosition:
    name = "reduce_position"
    cuts_positions_only = True  # no spot order: fit for venues that trade perpetuals only

    def check(self, book: AccountBook, stables: frozenset[str], markets: dict[str, Market]) -> str | None:
        if not book.unified:
            return f"a {book.model} account holds no perpetual positions (only unified accounts do)"
        if not any(e.perp_size != 0 for e in book.exposures.values()):
            return "the account has no perpetual position to reduce"
        missing = [a for a, e in book.exposures.items() if e.perp_size != 0 and a not in markets]
        if len(missing) == sum(1 for e in book.exposures.values() if e.perp_size != 0):
            return f"no market to trade the positions on ({', '.join(sorted(missing))})"
        return None

    def plan(self, request: PlanRequest) -> Plan:
        draft = Draft(request)
        book, mv = request.book, request.market
        positions = [a for a, e in book.exposures.items() if e.perp_size != 0 and a in mv.prices]
        if not book.unified or not positions:
            return draft.empty(self.name, "no perpetual position to reduce")
        if draft.reached():
            return draft.empty(self.name, f"health {draft.before:.4g} already at or above the target {request.target:g}")
        for a in positions:
            if a not in mv.markets:
                draft.note(f"{a}: no market to trade the position on")
        positions.sort(key=lambda a: (-book.exposures[a].perp_mm * mv.prices[a], a))
        draft.run([partial(perp_leg, asset=a) for a in positions if a in mv.markets])
        return draft.finish(self.name, "cutting the positions cannot raise health here")
