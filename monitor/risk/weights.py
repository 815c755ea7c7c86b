"""Collateral weight schedules: flat haircuts and progressive value tiers.

A tiered weight is a piecewise-linear, concave function of the holding's value:
the first band counts at its weight, the next band at the next, and so on
(Bybit "collateral value ratio" tiers, OKX "discount rate" tiers; both publish
the bands per coin in their margin docs). W(v) = cum[j] + w[j] * (v - lo[j])
where j is the band holding v.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np


@dataclass(frozen=True, slots=True)
class WeightSchedule:
    lows: tuple[float, ...]  # lower bound of each band, lows[0] == 0
    weights: tuple[float, ...]
    # Derived arrays, computed once (apply() is on the tick path).
    _lows: np.ndarray = field(init=False, repr=False, compare=False)
    _weights: np.ndarray = field(init=False, repr=False, compare=False)
    _cum: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lows = np.asarray(self.lows, dtype=np.float64)
        weights = np.asarray(self.weights, dtype=np.float64)
        cum = np.concatenate(([0.0], np.cumsum(np.diff(lows) * weights[:-1])))
        object.__setattr__(self, "_lows", lows)
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_cum", cum)

    @staticmethod
    @lru_cache(maxsize=4096)
    def flat(weight: float) -> WeightSchedule:
        # Shared: schedules are immutable, and building 10k accounts' books would otherwise
        # build one per account and asset (most of a reload's time).
        return WeightSchedule((0.0,), (float(weight),))

    @staticmethod
    def from_spec(spec: float | list) -> WeightSchedule:
        """From config: a number or a list of tiers ({up_to, weight}, the last without up_to)."""
        if isinstance(spec, int | float):
            return WeightSchedule.flat(spec)
        lows = [0.0] + [float(t.up_to) for t in spec[:-1]]
        return WeightSchedule(tuple(lows), tuple(float(t.weight) for t in spec))

    @property
    def is_flat(self) -> bool:
        return len(self.weights) == 1

    def apply(self, value: np.ndarray | float) -> np.ndarray | float:
        """Weighted value of holdings worth `value` (vectorized; value >= 0)."""
        if self.is_flat:
            return self.weights[0] * value
        v = np.asarray(value, dtype=np.float64)
        j = np.searchsorted(self._lows, v, side="right") - 1
        j = np.maximum(j, 0)  # value 0 (and -0.0) belongs to the first band
        out = self._cum[j] + self._weights[j] * (v - self._lows[j])
        return float(out) if np.ndim(out) == 0 else out

    def marginal(self, value: float) -> float:
        """Weight of the next unit of value at `value` (the band's weight)."""
        j = int(np.searchsorted(np.asarray(self.lows), value, side="right") - 1)
        return self.weights[max(j, 0)]
