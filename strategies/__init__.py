"""Pluggable rebalancing strategies; `default_registry()` has the built-in ones by name."""

from __future__ import annotations

from strategies.base import Market, MarketView, PlanRequest, Strategy, StrategyRegistry
from strategies.reduce_position import ReducePosition
from strategies.repay_debt import RepayDebt
from strategies.sell_to_stable import SellToStable
from strategies.target_weights import TargetWeights
from strategies.top_up import TopUp

BUILT_IN: tuple[type, ...] = (SellToStable, RepayDebt, ReducePosition, TargetWeights, TopUp)


def default_registry() -> StrategyRegistry:
    """A new registry with the built-in strategies (a fresh one per call: no shared mutable state)."""
    registry = StrategyRegistry()
    for cls in BUILT_IN:
        registry.register(cls.name, cls)
    return registry


__all__ = ["Market", "MarketView", "PlanRequest", "Strategy", "StrategyRegistry", "default_registry"]
