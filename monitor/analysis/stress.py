"""Shock stress tests: every account at shocked prices, the level it lands in, and the plan
the daemon would execute there, on the same Monitor, strategies and paper executor the
daemon and replay use. Also, per account, the uniform fall of its collateral that reaches
liquidation (solved exactly across weight tiers)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from monitor.config import Settings
from monitor.core import Monitor
from monitor.execution.journaled import execution_record_fills
from monitor.execution.paper import PaperExecutor
from monitor.model import Fill
from monitor.risk.portfolio import AccountBook, evaluate, liquidated
from monitor.risk.solve import uniform_liquidation_shock
from monitor.rules import AccountRules, LevelSpec
from strategies.base import StrategyRegistry


@dataclass(frozen=True)
class PlanOutcome:
    level: str
    strategy: str
    orders: tuple[dict, ...]  # {symbol, side, amount, price, fee}
    repays: tuple[dict, ...]  # {asset, amount}
    cost: float  # fees plus the slippage given up against the mid price, in the valuation unit
    health_after: float
    note: str
    transfers: tuple[dict, ...] = ()  # top-ups: {asset, amount}


@dataclass(frozen=True)
class AccountStress:
    name: str
    model: str
    health_before: float
    health_after: float  # at the shocked prices, before any action
    level: str | None  # the deepest level the shocked health is below
    liquidated: bool
    plan: PlanOutcome | None  # None: no rebalance level is breached
    uniform_shock: float | None  # the fall of all its collateral together that reaches health 1
    collateral: tuple[str, ...]  # the assets that uniform fall applies to


def collateral_assets(book: AccountBook, stables: frozenset[str]) -> tuple[str, ...]:
    """The volatile assets the account is long: held, or a long perpetual."""
    return tuple(a for a, e in book.exposures.items() if a not in stables and (e.qty > 0 or e.perp_size > 0))


def shocked_prices(prices: dict[str, float], shocks: dict[str, float]) -> dict[str, float]:
    return {a: p * (1 + shocks.get(a, 0.0)) for a, p in prices.items()}


def landing_level(rules: AccountRules, health: float) -> str | None:
    breached = [lv.name for lv in rules.levels if health < lv.threshold]
    return breached[-1] if breached else None  # levels run highest first: the last is the deepest


def acting_level(rules: AccountRules, health: float) -> LevelSpec | None:
    """The level that would act: the deepest breached rebalance level, as the rules choose."""
    acting = [lv for lv in rules.levels if lv.action == "rebalance" and health < lv.threshold]
    return acting[-1] if acting else None


def run_stress(settings: Settings, registry: StrategyRegistry, prices: dict[str, float],
               shocks: dict[str, float], ts_ms: int = 0) -> list[AccountStress]:
    monitor = Monitor(settings, registry)
    after = shocked_prices(prices, shocks)
    for asset, price in after.items():
        monitor.engine.apply(monitor.engine.asset_index[asset], price, ts_ms)
    monitor.now_ms = ts_ms
    out = []
    for i, book in enumerate(list(monitor.engine.books)):
        rules = monitor.rules.accounts[i]
        before = evaluate(book, prices).health
        h = float(monitor.engine.health[i])
        collateral = collateral_assets(book, monitor.stables)
        uniform = uniform_liquidation_shock(book, prices, collateral)
        lv = acting_level(rules, h)
        plan = _execute(monitor, i, lv, ts_ms) if lv is not None else None
        out.append(AccountStress(book.name, book.model, before, h, landing_level(rules, h), bool(liquidated(h)), plan,
                                 uniform, collateral))
    return out


def _execute(monitor: Monitor, i: int, lv: LevelSpec, ts_ms: int) -> PlanOutcome:
    """The plan the level's strategy makes, filled on a paper ledger as the daemon would."""
    acc = monitor.rules.accounts[i]
    h = float(monitor.engine.health[i])
    if acc.max_actions_per_day == 0:
        return PlanOutcome(lv.name, lv.strategy, (), (), 0.0, h, "max_actions_per_day is 0: the daemon never acts")
    caps = [c for c in (lv.max_notional, acc.max_notional_per_day) if c is not None]  # a fresh day's budget
    plan = monitor.plan_for(i, lv, ts_ms, min(caps) if caps else None)
    if plan.is_empty or not plan.expected_health > h:
        return PlanOutcome(lv.name, lv.strategy, (), (), 0.0, h, plan.note or "the plan would not raise health")
    s = monitor.settings.execution
    executor = PaperExecutor(monitor.quote, s.fee_rate, s.slippage, lambda: ts_ms)
    execution = executor.execute_now(plan)
    settled = monitor.settle(plan, execution)
    legs = execution_record_fills(execution)
    cost = sum(f.fee + _slippage(monitor, f) for f in execution.fills)
    return PlanOutcome(lv.name, lv.strategy, tuple(legs["fills"]), tuple(legs["repays"]), cost, settled.health_after,
                       plan.note, tuple(legs["transfers"]))


def _slippage(monitor: Monitor, fill: Fill) -> float:
    """What a fill gave up against the mid price, in quote units (the paper executor's concession)."""
    known = monitor.engine.asset_index
    base, quote = fill.order.base, fill.order.quote
    mid = monitor.engine.price_of(base) / (monitor.engine.price_of(quote) if quote in known else 1.0) \
        if base in known else math.nan
    return abs(mid - fill.price) * fill.amount if math.isfinite(mid) else 0.0


