"""Accounts as the risk core sees them, and the exact (non-incremental) health math.

Every margin model reduces to a numerator N and a denominator D per account,
summed over assets, with health h = scale * N / D (h = 1 is liquidation):

| model         | N (per asset)                          | D (per asset)                     | scale            |
|---------------|----------------------------------------|-----------------------------------|------------------|
| health_factor | W(qty*p)                               | debt*p                            | 1                |
| ltv           | W(qty*p)                               | debt*p                            | liquidation_ltv  |
| margin_level  | qty*p (every asset at 100%)            | debt*p                            | 1/liq_level      |
| unified       | W(qty*p) - debt*p + size*p - cost      | B(debt*p) + M(|size|*p)           | 1/liq_level      |

- health_factor: Aave v3 HF = sum(collateral * liquidation threshold) / debt.
- ltv: LTV = debt / weighted collateral, liquidated at liquidation_ltv, so h = liq_ltv / LTV.
- margin_level: Binance classic cross margin, margin level = total assets / total
  liabilities, liquidated at 1.1 (Binance margin "Margin Level" FAQ).
- unified: Bybit UTA, account MM rate = maintenance margin / margin balance,
  liquidation at 100%; margin balance = collateral value (tiered collateral value
  ratios) minus liabilities plus perpetual unrealized PnL (Bybit help centre,
  "Unified Trading Account: margin calculation"). h = 1 / MM rate. Binance Portfolio
  Margin counts the inverse, uniMMR = equity / MM, and liquidates at uniMMR <= 1.05
  (Binance "Portfolio Margin: uniMMR"): its liquidation level 1.05 scales h.

W, B and M are progressive tier schedules (monitor/risk/tiers.py): collateral weights,
borrow maintenance (Bybit position-tiers) and perpetual maintenance (risk limits), each
in the venue's unit (coin quantity or USD value). A venue liquidates at h <= 1.

What the model cannot attribute when a venue reports its own totals is carried as a
residual (`residual_num`, `residual_den`, USD) from the last sync until the next.

`contributions` is the one formula both the incremental engine (vectorized over
a column of accounts) and the full recompute / planners (scalars) use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from monitor.risk.tiers import NONE, Tiers

MODELS = ("health_factor", "ltv", "margin_level", "unified")


@dataclass(frozen=True, slots=True)
class Exposure:
    """What one account has of one asset. Perpetuals are folded into three sums so
    several positions on the same asset add up: pnl = size*p - cost, mm = perp_mm*p."""

    qty: float = 0.0  # gross amount held, >= 0
    debt: float = 0.0  # gross amount borrowed, >= 0
    perp_size: float = 0.0  # sum of signed position sizes
    perp_cost: float = 0.0  # sum of size * entry
    perp_mm: float = 0.0  # sum of |size| * mmr over positions with a flat rate (tiered ones: the book's perp_tiers)

    @property
    def is_empty(self) -> bool:
        return self.qty == 0 and self.debt == 0 and self.perp_size == 0 and self.perp_mm == 0 and self.perp_cost == 0


@dataclass(frozen=True, slots=True)
class AccountBook:
    """One account's holdings and model parameters; immutable (planners derive changed copies)."""

    name: str
    model: str
    scale: float  # h = scale * N / D
    param: float  # liquidation_ltv (ltv), liquidation_level (margin_level), else 1
    exposures: dict[str, Exposure] = field(default_factory=dict)
    weights: dict[str, Tiers] = field(default_factory=dict)  # resolved per asset
    # What the owner keeps outside the account that a top-up may move in (asset -> amount):
    # not collateral until moved, so no part of health.
    reserve: dict[str, float] = field(default_factory=dict)
    borrow_tiers: dict[str, Tiers] = field(default_factory=dict)  # unified: maintenance of a borrowed coin
    perp_tiers: dict[str, Tiers] = field(default_factory=dict)  # unified: maintenance of the net perp on a coin
    # What the venue counts and the model cannot attribute (USD), from the last sync.
    residual_num: float = 0.0
    residual_den: float = 0.0

    @property
    def unified(self) -> bool:
        return self.model == "unified"

    def schedule(self, asset: str) -> Tiers:
        """The asset's collateral weight schedule."""
        if self.model == "margin_level":
            return IDENTITY
        return self.weights.get(asset, IDENTITY)

    def borrow_schedule(self, asset: str) -> Tiers:
        return self.borrow_tiers.get(asset, NONE) if self.unified else NONE

    def perp_schedule(self, asset: str) -> Tiers:
        return self.perp_tiers.get(asset, NONE) if self.unified else NONE

    def schedules(self, asset: str) -> tuple[Tiers, Tiers, Tiers]:
        """(collateral weight, borrow maintenance, perp maintenance) of the asset."""
        return self.schedule(asset), self.borrow_schedule(asset), self.perp_schedule(asset)

    def with_exposure(self, asset: str, exposure: Exposure) -> AccountBook:
        exps = dict(self.exposures)
        exps[asset] = exposure
        return replace(self, exposures=exps)


IDENTITY = Tiers.flat(1.0)


def contributions(unified, qty, debt, perp_size, perp_cost, weighted, maintenance, price):
    """(N, D, equity) contributions of an asset at `price`; scalars or aligned numpy arrays.

    `weighted` is the weighted collateral value W (USD) and `maintenance` the maintenance
    margin B + M (USD, unified only) at `price`; `unified` is a bool or a 0/1 array.
    """
    u = unified
    debt_value = debt * price
    num = weighted + perp_size * price - perp_cost - u * debt_value
    den = (1 - u) * debt_value + maintenance
    equity = (qty - debt + perp_size) * price - perp_cost
    return num, den, equity


def maintenance_of(book: AccountBook, asset: str, e: Exposure, price: float) -> float:
    """Maintenance margin (USD) of the asset's borrow and perpetuals at `price`."""
    return (book.borrow_schedule(asset).value(e.debt, price) + e.perp_mm * price
            + book.perp_schedule(asset).value(abs(e.perp_size), price))


def price_kinks(book: AccountBook, asset: str) -> list[float]:
    """Prices of `asset` at which its terms kink: a collateral, borrow or perp tier banded by USD
    value crossed by what the account holds, owes or has open."""
    e = book.exposures.get(asset)
    if e is None:
        return []
    weight, borrow, perp = book.schedules(asset)
    return weight.price_bounds(e.qty) + borrow.price_bounds(e.debt) + perp.price_bounds(abs(e.perp_size))


def exposure_terms(book: AccountBook, asset: str, price: float) -> tuple[float, float, float]:
    e = book.exposures[asset]
    weighted = book.schedule(asset).value(e.qty, price)
    return contributions(float(book.unified), e.qty, e.debt, e.perp_size, e.perp_cost, weighted,
                         maintenance_of(book, asset, e, price), price)


def health_of(scale: float, num: float | np.ndarray, den: float | np.ndarray):
    """h = scale * N / D with the edge cases: no debt is infinitely healthy; an
    unknown (nan) N or D is unknown health, never -inf ("liquidated")."""
    if isinstance(num, np.ndarray):
        # over: a dust debt (1e-308) against real collateral is infinitely healthy, as no debt is
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            h = scale * num / den
        edge = ~(den > 0)  # rare (no debt, unknown prices): fix those up only
        if edge.any():
            n = num[edge]
            h[edge] = np.where(n >= 0, np.inf, np.where(np.isnan(n + den[edge]), np.nan, -np.inf))
        return h
    if den > 0:
        return scale * num / den
    if math.isnan(num) or math.isnan(den):
        return math.nan
    return math.inf if num >= 0 else -math.inf


@dataclass(frozen=True, slots=True)
class Totals:
    num: float
    den: float
    equity: float
    health: float


def evaluate(book: AccountBook, prices: dict[str, float]) -> Totals:
    """Exact health of one account (the reference the incremental engine must match)."""
    num, den, eq = book.residual_num, book.residual_den, 0.0
    for asset, exposure in book.exposures.items():
        if exposure.is_empty:
            continue  # an emptied asset adds nothing and needs no price (as in the engine)
        n, d, e = exposure_terms(book, asset, prices[asset])
        num += n
        den += d
        eq += e
    return Totals(num, den, eq, health_of(book.scale, num, den))


def components(book: AccountBook, prices: dict[str, float]) -> dict[str, float]:
    """The account's sums by kind (USD), as venues report them: weighted collateral, liabilities,
    maintenance margin and perpetuals' unrealized PnL (a disagreement with the venue names one)."""
    out = {"collateral": 0.0, "liabilities": 0.0, "maintenance": 0.0, "pnl": 0.0}
    for asset, e in book.exposures.items():
        if e.is_empty:
            continue
        p = prices[asset]
        out["collateral"] += book.schedule(asset).value(e.qty, p)
        out["liabilities"] += e.debt * p
        out["maintenance"] += maintenance_of(book, asset, e, p)
        out["pnl"] += e.perp_size * p - e.perp_cost
    return out


def to_native(model: str, param: float, health: float) -> float:
    """The venue's own figure for a health value (`param`: the model's liquidation parameter)."""
    if model == "ltv":
        return param / health if health > 0 else math.inf
    if model == "margin_level":
        return health * param
    if model == "unified":  # MM rate = MM / equity = 1 / (h * liquidation level)
        return 1.0 / (health * param) if health > 0 else math.inf
    return health


def from_native(model: str, param: float, native: float) -> float:
    """Health for a figure in the model's native unit (the inverse of to_native)."""
    if model == "ltv":
        return param / native
    if model == "unified":
        return 1.0 / (native * param)
    if model == "margin_level":
        return native / param
    return native


def liquidated(health):
    """Venues liquidate at the point itself: h <= 1 (NaN, unknown, is not liquidated)."""
    return health <= 1.0
