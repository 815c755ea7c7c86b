"""Shared sizing machinery: legs solved in closed form, rounding, limits, the plan draft.

A Leg is one kind of action parametrized by a size x >= 0 (base units sold or
bought, or an amount repaid); `build(x)` gives its exact orders and repays and
`breakpoints` are the x where the account's health function has a kink. The
Draft solves each leg for the target (monotone piecewise-linear root, see
monitor.risk.solve), rounds to the venue's limits, and keeps the book after the
accepted legs. The plan's expected health is recomputed at the end by applying
the merged orders and repays to the original book (what an executor does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitor.model import Order, Plan, Repay
from monitor.risk.portfolio import AccountBook, evaluate
from monitor.risk.solve import argmax_piecewise, solve_piecewise_linear
from monitor.risk.trades import apply_plan
from strategies.base import MarketView, PlanRequest

Build = Callable[[float], tuple[list[Order], list[Repay]]]


@dataclass(frozen=True, slots=True)
class Leg:
    """An action of size x in [0, hi]; exact for any x, piecewise linear between breakpoints."""

    label: str
    hi: float
    breakpoints: tuple[float, ...]
    build: Build
    lot: float = 0.0
    min_notional: float = 0.0
    unit_notional: float = 0.0  # quote notional per unit of x (0: a repay, no trade)


# -- rounding --------------------------------------------------------------------------


def _clean(v: float) -> float:
    # n * lot carries binary noise (3 * 0.1); 15 significant digits removes it.
    return float(f"{v:.15g}")


def round_up(x: float, lot: float) -> float:
    if lot <= 0:
        return x
    return _clean(math.ceil(x / lot - 1e-9) * lot)


def round_down(x: float, lot: float) -> float:
    if lot <= 0:
        return x
    return _clean(math.floor(x / lot + 1e-9) * lot)


def lot_cap(limit: float, lot: float) -> float:
    """The largest lot multiple not above `limit` (what is held or affordable)."""
    v = round_down(limit, lot)
    if v > limit:
        v = limit if v - limit <= 1e-9 * lot else _clean(v - lot)
    return max(v, 0.0)


def crossings(q0: float, slope: float, levels: Sequence[float], start: float = 0.0) -> list[float]:
    """x > start where q0 + slope * (x - start) equals one of `levels`."""
    if slope == 0:
        return []
    out = (start + (lv - q0) / slope for lv in levels)
    return [x for x in out if x > start and math.isfinite(x)]


def qty_levels(book: AccountBook, asset: str, price: float) -> list[float]:
    """Quantities held at which an asset's collateral weight changes tier."""
    return book.schedule(asset).qty_bounds(price)


def debt_levels(book: AccountBook, asset: str, price: float) -> list[float]:
    """Quantities owed at which a borrow's maintenance rate changes tier."""
    return book.borrow_schedule(asset).qty_bounds(price)


def perp_levels(book: AccountBook, asset: str, price: float) -> list[float]:
    """Position sizes at which a perpetual's maintenance rate changes tier (its risk limit)."""
    return book.perp_schedule(asset).qty_bounds(price)


def balance_kinks(book: AccountBook, asset: str, price: float, rate: float) -> list[float]:
    """x > 0 where a balance moving by `rate` per unit of x crosses a kink: a weight tier while
    held, a borrow maintenance tier while owed, or zero (a debit runs into debt; on a unified
    account, which nets each coin, a credit first pays the coin's liability and only then counts
    as collateral)."""
    e = book.exposures.get(asset)
    net = 0.0 if e is None else (e.qty - e.debt if book.unified else e.qty)
    owed = [-d for d in debt_levels(book, asset, price)] if book.unified else []
    return crossings(net, rate, qty_levels(book, asset, price) + owed + [0.0])


# -- ranking ---------------------------------------------------------------------------


def riskiest_first(book: AccountBook, market: MarketView) -> list[str]:
    """Held, tradable, non-stable assets: highest daily volatility first; without one,
    lowest marginal collateral weight (what a sale gives up first), then largest value."""
    held = [a for a, e in book.exposures.items()
            if e.qty > 0 and a not in market.stables and a in market.markets and market.prices.get(a, 0) > 0]

    def key(a: str) -> tuple:
        vol = market.volatility.get(a)
        if vol is not None and math.isfinite(vol):
            return (0, -vol, 0.0, a)
        value = book.exposures[a].qty * market.prices[a]
        return (1, book.schedule(a).marginal(book.exposures[a].qty, market.prices[a]), -value, a)

    return sorted(held, key=key)


# -- the draft -------------------------------------------------------------------------


class Draft:
    """One planning call's working state (local to the call, never shared)."""

    def __init__(self, request: PlanRequest) -> None:
        self.request = request
        self.market = request.market
        self.start = request.book
        self.book = request.book
        self.orders: list[Order] = []
        self.repays: list[Repay] = []
        self.notes: list[str] = []
        self.budget = math.inf if request.max_notional is None else float(request.max_notional)
        self.before = self.health(self.book)

    def health(self, book: AccountBook) -> float:
        return evaluate(book, self.market.prices).health

    def gap(self, book: AccountBook) -> float:
        """scale*N - H*D: >= 0 exactly when the target is met (also when D = 0)."""
        t = evaluate(book, self.market.prices)
        return book.scale * t.num - self.request.target * t.den

    def reached(self, book: AccountBook | None = None) -> bool:
        """The target is met, up to float noise (a solved root can land an ulp short)."""
        t = evaluate(self.book if book is None else book, self.market.prices)
        scale, target = self.start.scale, self.request.target
        return scale * t.num - target * t.den >= -1e-12 * max(abs(scale * t.num), target * t.den)

    def has_debt(self) -> bool:
        return evaluate(self.book, self.market.prices).den > 0

    def after(self, legs: tuple[list[Order], list[Repay]]) -> AccountBook:
        return apply_plan(self.book, legs[0], legs[1], self.market.fee_rate)

    def add(self, orders: list[Order], repays: list[Repay]) -> None:
        """Accept legs sized elsewhere (not solved for the target)."""
        self.book = self.after((orders, repays))
        self.orders += orders
        self.repays += repays
        self.budget -= sum(o.notional for o in orders)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def take(self, leg: Leg) -> bool:
        """Solve the leg for the target (or its best size if the target is out of reach); accept it if it helps."""
        if leg.hi <= 0:
            return False
        x = solve_piecewise_linear(lambda s: self.gap(self.after(leg.build(s))), leg.breakpoints, 0.0, leg.hi)
        if x is not None and self._accept(leg, x):
            return True
        # Out of reach (or a root float noise made useless): the size that helps most.
        best = argmax_piecewise(lambda s: self.health(self.after(leg.build(s))), leg.breakpoints, 0.0, leg.hi)
        return best != x and self._accept(leg, best)

    def _accept(self, leg: Leg, x: float) -> bool:
        """Fit x to the venue's limits; keep the leg if it raises health."""
        x = self.fit(leg, x) if x > 0 else 0.0
        if x <= 0:
            return False
        orders, repays = leg.build(x)
        if not self.health(self.after((orders, repays))) > self.health(self.book):
            return False
        self.add([o for o in orders if o.amount > 0], [r for r in repays if r.amount > 0])
        return True

    def fit(self, leg: Leg, x: float, up: bool = True) -> float:
        """Round to the lot (up to reach the target, or down), never above what is held/affordable
        (leg.hi) or the notional budget; raised to the venue's minimum notional if that fits, else 0."""
        cap = lot_cap(leg.hi, leg.lot)
        x = min(round_up(x, leg.lot) if up else round_down(x, leg.lot), cap)
        if leg.unit_notional <= 0:
            return x
        budget_cap = lot_cap(max(self.budget, 0.0) / leg.unit_notional, leg.lot) if math.isfinite(self.budget) else cap
        if x > budget_cap:
            x = budget_cap
            self.note(f"capped by max_notional {self.request.max_notional:g}")
        if x * leg.unit_notional < leg.min_notional:
            need = round_up(leg.min_notional / leg.unit_notional, leg.lot)
            if need <= min(cap, budget_cap):
                return need  # the smallest order the venue takes overshoots the target a little
            self.note(f"{leg.label}: below the minimum notional {leg.min_notional:g}, skipped")
            return 0.0
        return x

    def run(self, makers: Sequence[Callable[[Draft], Leg | None]], passes: int = 4) -> None:
        """Take legs in order until the target is met; repeat while a pass helps (an action
        that hurt at the old health may help at the new one)."""
        for _ in range(passes):
            progress = False
            for make in makers:
                if self.reached():
                    return
                leg = make(self)
                if leg is not None and self.take(leg):
                    progress = True
            if not progress:
                return

    # -- the result ----------------------------------------------------------------------

    def empty(self, strategy: str, note: str) -> Plan:
        r = self.request
        return Plan(r.book.name, r.level, strategy, r.ts_ms, self.before, self.before, note=note)

    def finish(self, strategy: str, nothing: str, report_target: bool = True) -> Plan:
        """The plan of the accepted legs, or an empty plan saying `nothing` if they do not raise health."""
        orders, repays = merge_orders(self.orders), merge_repays(self.repays)
        final = apply_plan(self.start, orders, repays, self.market.fee_rate)
        expected = self.health(final)
        if (not orders and not repays) or not expected > self.before:
            return self.empty(strategy, "; ".join([nothing, *self.notes]))
        notes = list(self.notes)
        if report_target and not self.reached(final):
            notes.insert(0, f"falls short of the target {self.request.target:g}")
        r = self.request
        return Plan(r.book.name, r.level, strategy, r.ts_ms, self.before, expected,
                    tuple(orders), tuple(repays), "; ".join(notes))


def merge_orders(orders: Sequence[Order]) -> list[Order]:
    """One order per (symbol, side, price): legs taken in several passes add up."""
    merged: dict[tuple, Order] = {}
    for o in orders:
        k = (o.symbol, o.side, o.price, o.base, o.quote)
        prev = merged.get(k)
        merged[k] = o if prev is None else Order(o.symbol, o.side, _clean(prev.amount + o.amount), o.price, o.base, o.quote)
    return list(merged.values())


def merge_repays(repays: Sequence[Repay]) -> list[Repay]:
    merged: dict[str, float] = {}
    for r in repays:
        merged[r.asset] = merged.get(r.asset, 0.0) + r.amount
    return [Repay(a, x) for a, x in merged.items()]
