"""repay_debt: the classic "repay to target ratio".

In order: repay borrowed assets from the balance of them already held (no
trade); sell volatile collateral, riskiest first, into each borrowed stable and
repay it with the proceeds; buy a borrowed non-stable asset with a held stable
and repay it. Each step is solved for the target in closed form and taken only
if it raises health. Works on every model; on margin_level accounts it is the
only way to raise the margin level from inside the account.
"""

from __future__ import annotations

from functools import partial

from monitor.model import Plan
from monitor.risk.portfolio import AccountBook
from strategies.base import Market, PlanRequest
from strategies.legs import buy_leg, repay_leg, sale_leg
from strategies.sizing import Draft, riskiest_first


class RepayDebt:
    name = "repay_debt"

    def check(self, book: AccountBook, stables: frozenset[str], markets: dict[str, Market]) -> str | None:
        if not any(e.debt > 0 for e in book.exposures.values()):
            return "the account has no borrowed asset to repay"
        return None

    def plan(self, request: PlanRequest) -> Plan:
        draft = Draft(request)
        book, mv = request.book, request.market
        debts = [a for a, e in book.exposures.items() if e.debt > 0 and a in mv.prices]
        if not debts:
            return draft.empty(self.name, "no debt to repay")
        if draft.reached():
            return draft.empty(self.name, f"health {draft.before:.4g} already at or above the target {request.target:g}")
        # Stable debts first (the usual loan), then the largest debt by value.
        debts.sort(key=lambda a: (a not in mv.stables, -book.exposures[a].debt * mv.prices[a], a))
        makers = [partial(repay_leg, asset=d) for d in debts]
        collateral = riskiest_first(book, mv)
        for d in (d for d in debts if d in mv.stables):
            makers += [partial(sale_leg, asset=a, receive=d, repay=True) for a in collateral]
        for d in (d for d in debts if d not in mv.stables):
            payers = self._payers(request, d)
            if not payers:
                draft.note(f"{d} debt: no stable held to buy it with")
            makers += [partial(buy_leg, asset=d, pay=s) for s in payers]
        draft.run(makers)
        return draft.finish(self.name, "repaying debt cannot raise health here")

    @staticmethod
    def _payers(request: PlanRequest, debt_asset: str) -> list[str]:
        """Held stables to buy a non-stable debt with: the account's stable first, then by value."""
        book, mv = request.book, request.market
        if debt_asset not in mv.markets:
            return []
        held = [a for a, e in book.exposures.items() if a in mv.stables and e.qty > 0 and mv.prices.get(a, 0) > 0]
        return sorted(held, key=lambda a: (a != request.stable, -book.exposures[a].qty * mv.prices[a], a))
