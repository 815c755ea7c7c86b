"""top_up: move collateral in from the owner's reserve (a funding wallet, cash set aside).

Nothing is sold, so nothing is lost to fees or slippage and no position is cut: the
gentlest fix when the owner keeps a reserve. A credit of x of asset s raises the
account's numerator by its weighted value (on a unified account it first pays s's
liability, which lowers the denominator too, as the venue nets the coin), so the
target condition is piecewise linear in x with kinks where the liability is paid off
and where the holding crosses a weight tier: solved exactly (monitor.risk.solve).

Params (all optional): `asset` (default: the account's stable if the reserve holds
it, else the reserve's largest holding by value), `max_amount` (per action), `step`
(the amount is rounded up to it; default 0.01).
"""

from __future__ import annotations

import math
from typing import Any

from monitor.model import Plan, Transfer
from monitor.risk.portfolio import AccountBook, evaluate
from monitor.risk.solve import solve_piecewise_linear
from monitor.risk.trades import apply_transfer
from strategies.base import Market, PlanRequest
from strategies.sizing import crossings, debt_levels, qty_levels, round_up

PARAMS = {"asset", "max_amount", "step"}


class TopUp:
    name = "top_up"
    draws_reserve = True  # an exchange account needs a reserve_wallet for it (checked with the config)

    def check_params(self, params: dict[str, Any]) -> str | None:
        unknown = sorted(set(params) - PARAMS)
        if unknown:
            return f"unknown param {unknown[0]!r} (takes {', '.join(sorted(PARAMS))})"
        for key in ("max_amount", "step"):
            v = params.get(key)
            if v is not None and not (isinstance(v, int | float) and v > 0):
                return f"{key} must be a positive number"
        if "asset" in params and not isinstance(params["asset"], str):
            return "asset must be an asset name"
        return None

    def check(self, book: AccountBook, stables: frozenset[str], markets: dict[str, Market]) -> str | None:
        if not any(x > 0 for x in book.reserve.values()):
            return "the account has no reserve to top up from (set reserve = {USDT = ...})"
        return None

    def plan(self, request: PlanRequest) -> Plan:
        book, mv, target = request.book, request.market, request.target
        before = evaluate(book, mv.prices).health

        def empty(note: str) -> Plan:
            return Plan(book.name, request.level, self.name, request.ts_ms, before, before, note=note)

        asset = self._asset(request)
        if asset is None:
            return empty("the reserve is empty")
        price = mv.prices.get(asset, math.nan)
        if not price > 0:
            return empty(f"no price for {asset}")
        limit = book.reserve.get(asset, 0.0)
        if request.params.get("max_amount") is not None:
            limit = min(limit, float(request.params["max_amount"]))
        if limit <= 0:
            return empty(f"the reserve holds no {asset}")
        if before >= target:
            return empty(f"health {before:.4g} already at or above the target {target:g}")

        def after(x: float) -> AccountBook:
            return apply_transfer(book, Transfer(asset, x))

        def gap(x: float) -> float:
            t = evaluate(after(x), mv.prices)
            return book.scale * t.num - target * t.den

        e = book.exposures.get(asset)
        owed = e.debt if (e is not None and book.unified) else 0.0
        held = e.qty if e is not None else 0.0
        kinks = ([owed] if owed > 0 else []) + crossings(held, 1.0, qty_levels(book, asset, price), start=owed)
        kinks += crossings(owed, -1.0, debt_levels(book, asset, price))  # its maintenance tiers as it is paid
        x = solve_piecewise_linear(gap, kinks, 0.0, limit)
        note = ""
        if x is None:
            x, note = limit, f"falls short of the target {target:g}: the reserve's {limit:g} {asset} is all there is"
        step = float(request.params.get("step", 0.01))
        x = min(round_up(x, step), limit)  # the whole reserve may be an odd amount
        expected = evaluate(after(x), mv.prices).health
        if not (x > 0 and expected > before):
            return empty(f"a top-up of {asset} cannot raise health here")
        return Plan(book.name, request.level, self.name, request.ts_ms, before, expected, note=note,
                    transfers=(Transfer(asset, x),))

    @staticmethod
    def _asset(request: PlanRequest) -> str | None:
        reserve, mv = request.book.reserve, request.market
        wanted = request.params.get("asset")
        if wanted is not None:
            return wanted
        if request.stable is not None and reserve.get(request.stable, 0.0) > 0:
            return request.stable
        held = [a for a, x in reserve.items() if x > 0 and mv.prices.get(a, 0.0) > 0]
        return max(held, key=lambda a: (reserve[a] * mv.prices[a], a)) if held else None
