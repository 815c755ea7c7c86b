"""sell_to_stable: sell volatile collateral into the account's stable until the target health.

The proceeds stay in the account as stable collateral (nothing is repaid), so
this raises health only where the stable counts for more than what is sold:
on weighted models (health_factor, ltv, unified) when the stable's collateral
weight beats the sold asset's, after fee and slippage. On a margin_level
account every asset counts at 100%, so a swap cannot raise the margin level
(it only costs the fee): use repay_debt there.
"""

from __future__ import annotations

from functools import partial

from monitor.model import Plan
from monitor.risk.portfolio import AccountBook
from strategies.base import Market, PlanRequest
from strategies.legs import sale_leg
from strategies.sizing import Draft, riskiest_first

MARGIN_LEVEL_REASON = ("on a margin_level account every asset counts at 100%: selling collateral for a stable "
                       "cannot raise the margin level (use repay_debt)")


def _receivers(book: AccountBook, stables: frozenset[str], markets: dict[str, Market], asset: str) -> set[str]:
    held = {a for a in book.exposures if a in stables}
    quote = markets[asset].quote
    return held | ({quote} if quote in stables else set())


class SellToStable:
    name = "sell_to_stable"

    def check(self, book: AccountBook, stables: frozenset[str], markets: dict[str, Market]) -> str | None:
        if book.model == "margin_level":
            return MARGIN_LEVEL_REASON
        sellable = [a for a, e in book.exposures.items() if e.qty > 0 and a not in stables and a in markets]
        if not sellable:
            return "the account holds no volatile collateral with a market to sell"
        for asset in sellable:
            lowest = min(book.schedule(asset).rates)
            if any(max(book.schedule(s).rates) > lowest for s in _receivers(book, stables, markets, asset)):
                return None
        return ("no held asset has a lower collateral weight than the stable it would be sold into: "
                "swapping cannot raise health")

    def plan(self, request: PlanRequest) -> Plan:
        draft = Draft(request)
        book = request.book
        if book.model == "margin_level":
            return draft.empty(self.name, MARGIN_LEVEL_REASON)
        if not draft.has_debt():
            return draft.empty(self.name, "nothing to cover (no debt or margin requirement): health is already unbounded")
        if draft.reached():
            return draft.empty(self.name, f"health {draft.before:.4g} already at or above the target {request.target:g}")
        makers = []
        for asset in riskiest_first(book, request.market):
            receive = request.stable or request.market.markets[asset].quote
            if receive not in request.market.stables:
                draft.note(f"{asset}: its market quotes in {receive}, not a stable; not sold")
                continue
            # A unified account nets each coin (Bybit UTA): proceeds in a coin it owes pay that
            # liability off, which lowers the maintenance margin too. Plan it as the venue does it.
            makers.append(partial(sale_leg, asset=asset, receive=receive, repay=book.unified))
        if not makers:
            return draft.empty(self.name, "no volatile collateral to sell")
        draft.run(makers)
        return draft.finish(self.name, "selling collateral for the stable cannot raise health here "
                                       "(the stable's weight, after fee and slippage, is not above the assets')")
