"""Progressive tier schedules: collateral weights, borrow and perpetual maintenance rates.

Every venue publishes these as bands: the part of an amount inside band j counts at
rate j. The schedule is a piecewise-linear function of the amount,
f(x) = rates[j] * x + offsets[j] for x in band j, where by default the offsets make it
continuous (each band adds its own part). A venue that publishes its own deduction
(Bybit `mmDeduction`, Binance `cum`: MM = notional * MMR - deduction) sets it exactly.

The amount is either a coin quantity or a USD value (`unit`), as the venue defines it:
- collateral value ratios are bands of coin quantity on Bybit ("Tier (Quantity)", help
  centre "Collateral value ratio") and OKX (discount tiers, `minAmt`/`maxAmt` "in the
  currency"); a config may band by USD value;
- Bybit borrow maintenance tiers are bands of the borrowed quantity
  (GET /v5/spot-margin-trade/position-tiers, `borrowLimit` "tiers accumulation");
- perpetual risk limits are bands of the position's notional value (Bybit
  GET /v5/market/risk-limit, Binance GET /fapi/v1/leverageBracket) or of its size in
  contracts (OKX GET /api/v5/public/position-tiers, `minSz`/`maxSz`). OKX charges the whole
  position at its tier's rate: deductions of 0 on every band, a schedule that jumps at each bound.

A quantity schedule is linear in price (value = price * f(qty)); a value schedule has
kinks at price = bound / qty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

Unit = Literal["value", "qty"]


@dataclass(frozen=True, slots=True)
class Tiers:
    lows: tuple[float, ...]  # lower bound of each band, lows[0] == 0
    rates: tuple[float, ...]
    unit: Unit = "value"
    deductions: tuple[float, ...] | None = None  # the venue's own: f(x) = rates[j] * x - deductions[j]
    # Derived arrays, computed once (apply() is on the tick path).
    _lows: np.ndarray = field(init=False, repr=False, compare=False)
    _rates: np.ndarray = field(init=False, repr=False, compare=False)
    _offsets: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lows = np.asarray(self.lows, dtype=np.float64)
        rates = np.asarray(self.rates, dtype=np.float64)
        if self.deductions is not None:
            offsets = -np.asarray(self.deductions, dtype=np.float64)
        else:
            cum = np.concatenate(([0.0], np.cumsum(np.diff(lows) * rates[:-1])))
            offsets = cum - rates * lows
        object.__setattr__(self, "_lows", lows)
        object.__setattr__(self, "_rates", rates)
        object.__setattr__(self, "_offsets", offsets)

    @staticmethod
    @lru_cache(maxsize=4096)
    def flat(rate: float, unit: Unit = "value") -> Tiers:
        # Shared: schedules are immutable, and building 10k accounts' books would otherwise
        # build one per account and asset (most of a reload's time).
        return Tiers((0.0,), (float(rate),), unit)

    @staticmethod
    def bands(bands: list[tuple[float, float]] | tuple[tuple[float, float], ...], unit: Unit,
              deductions: tuple[float, ...] | None = None) -> Tiers:
        """From (lower bound, rate) pairs sorted by bound, the first at 0."""
        if len(bands) == 1 and deductions is None:
            return Tiers.flat(bands[0][1], unit)
        return Tiers(tuple(float(lo) for lo, _ in bands), tuple(float(r) for _, r in bands), unit, deductions)

    @property
    def is_flat(self) -> bool:
        return len(self.rates) == 1 and (self.deductions is None or self.deductions[0] == 0)

    @property
    def first_rate(self) -> float:
        return self.rates[0]

    def apply(self, amount: np.ndarray | float) -> np.ndarray | float:
        """f(amount) (vectorized; amount >= 0), in the schedule's own unit."""
        if self.is_flat:
            return self.rates[0] * amount
        x = np.asarray(amount, dtype=np.float64)
        j = np.maximum(np.searchsorted(self._lows, x, side="right") - 1, 0)  # 0 (and -0.0) is band 0
        out = self._rates[j] * x + self._offsets[j]
        return float(out) if np.ndim(out) == 0 else out

    def value(self, qty: float, price: float) -> float:
        """The schedule's USD figure for `qty` of the coin at `price`."""
        if self.unit == "qty":
            return float(self.apply(qty)) * price
        return float(self.apply(qty * price))

    def marginal(self, qty: float, price: float = 1.0) -> float:
        """The rate of the next unit at `qty` (the band's rate)."""
        x = qty if self.unit == "qty" else qty * price
        j = int(np.searchsorted(self._lows, x, side="right") - 1)
        return self.rates[max(j, 0)]

    def qty_bounds(self, price: float) -> list[float]:
        """Quantities at which the schedule kinks, at `price` (value bounds move with the price)."""
        if self.unit == "qty":
            return list(self.lows[1:])
        return [lo / price for lo in self.lows[1:]] if price > 0 else []

    def price_bounds(self, qty: float) -> list[float]:
        """Prices at which `qty` of the coin crosses a bound (none for a quantity schedule)."""
        if self.unit == "qty" or not qty > 0:
            return []
        return [lo / qty for lo in self.lows[1:]]

    def check(self) -> str | None:
        """Why the schedule is unusable, or None."""
        if not self.lows or self.lows[0] != 0 or len(self.lows) != len(self.rates):
            return "bands must start at 0"
        if any(b <= a for a, b in zip(self.lows, self.lows[1:])):
            return "band bounds must be strictly increasing"
        if any(not (math.isfinite(r) and r >= 0) for r in self.rates):
            return "rates must be finite and >= 0"
        return None


NONE = Tiers.flat(0.0)  # no maintenance
