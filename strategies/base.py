"""The Strategy protocol, the market view planners see, and the registry.

A strategy gets an immutable view of one account (an AccountBook) and of the
market, and returns a Plan: orders and repays, with the health it expects
after. It never talks to an exchange.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from monitor.errors import ConfigError
from monitor.model import Plan
from monitor.risk.portfolio import AccountBook


@dataclass(frozen=True, slots=True)
class Market:
    """How an asset trades: its symbol BASE/QUOTE and the venue's limits."""

    symbol: str
    base: str
    quote: str
    lot_size: float = 0.0  # amount step in base units; 0 = any
    min_notional: float = 0.0  # in quote units


@dataclass(frozen=True, slots=True)
class MarketView:
    """Prices and trading facts at planning time (immutable)."""

    prices: dict[str, float]  # asset -> price in the account's valuation unit
    quotes: dict[str, tuple[float, float]]  # asset -> (bid, ask); missing: price -/+ slippage
    markets: dict[str, Market]  # asset -> how it trades (absent for fixed-price assets)
    stables: frozenset[str]
    fee_rate: float
    slippage: float  # concession cap: a sale is priced at bid*(1-slippage) at worst
    volatility: dict[str, float] = field(default_factory=dict)  # asset -> daily EWMA volatility

    def sell_price(self, asset: str) -> float:
        bid = self.quotes.get(asset, (self.prices[asset], self.prices[asset]))[0]
        return bid * (1 - self.slippage)

    def buy_price(self, asset: str) -> float:
        ask = self.quotes.get(asset, (self.prices[asset], self.prices[asset]))[1]
        return ask * (1 + self.slippage)


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything one planning call needs."""

    book: AccountBook
    market: MarketView
    level: str
    target: float  # health to restore
    ts_ms: int
    stable: str | None  # the account's stable asset (sell into it, repay it)
    max_notional: float | None = None  # per-action and remaining daily budget, quote units
    params: dict[str, Any] = field(default_factory=dict)  # the level's strategy options


@runtime_checkable
class Strategy(Protocol):
    name: str

    def check(self, book: AccountBook, stables: frozenset[str], markets: dict[str, Market]) -> str | None:
        """Why this strategy can never raise this account's health (None if it can).

        Called at check-config time: e.g. swapping collateral on a margin_level account.
        """

    def plan(self, request: PlanRequest) -> Plan:
        """A plan toward request.target; an empty plan with a note when nothing helps."""


def params_problem(strategy: Strategy, params: dict[str, Any]) -> str | None:
    """A strategy validates its level's `params` with an optional check_params(params); one
    without that method takes none, so any key is a typo."""
    check = getattr(strategy, "check_params", None)
    if check is not None:
        return check(params)
    return f"{strategy.name} takes no params (got {sorted(params)[0]!r})" if params else None


StrategyFactory = Callable[[], Strategy]


class StrategyRegistry:
    """Built-in strategies by name, plus user strategies by import path ("pkg.module:ClassName")."""

    def __init__(self) -> None:
        self._factories: dict[str, StrategyFactory] = {}

    def register(self, name: str, factory: StrategyFactory) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Strategy:
        if name in self._factories:
            return self._factories[name]()
        if ":" in name:
            return _load_by_path(name)
        raise ConfigError(f"unknown strategy {name!r} (built in: {', '.join(self.names())}; "
                          "or give an import path like 'mypkg.module:MyStrategy')")


def _load_by_path(path: str) -> Strategy:
    module_name, _, attr = path.partition(":")
    try:
        strategy = getattr(importlib.import_module(module_name), attr)()
    except Exception as err:  # anything the user's module does on import or construction
        raise ConfigError(f"strategy {path!r}: cannot load ({type(err).__name__}: {err})") from None
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy {path!r}: needs a name, check() and plan()")
    return strategy
