"""Collateral weight schedules: flat haircuts and progressive value tiers.

A tiered weight is a piecewise-linear, concave function of the holding's value:
the first band counts at its weight, the next band at the next, and so on
(Bybit "collateral value ratio" tiers, OKX "discount rate" tiers; both publish
the bands per coin in their margin docs). W(v) = cum[j] + w[j] * (v - lo[j])
where j is the band holding v.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class WeightSchedule:
    lows: tuple[float, ...]  # lower bound of each band, lows[0] == 0
    weights: tuple[float, ...]

    @staticmethod
    def flat(weight: float) -> WeightSchedule:
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

    def _cum(self) -> np.ndarray:
        lows = np.asarray(self.lows)
        widths = np.diff(lows)
        return np.concatenate(([0.0], np.cumsum(widths * np.asarray(self.weights[:-1]))))

    def apply(self, value: np.ndarray | float) -> np.ndarray | float:
        """Weighted value of holdings worth `value` (vectorized; value >= 0)."""
        if self.is_flat:
            return self.weights[0] * value
        lows = np.asarray(self.lows)
        v = np.asarray(value, dtype=np.float64)
        j = np.searchsorted(lows, v, side="right") - 1
        j = np.clip(j, 0, len(lows) - 1)
        out = self._cum()[j] + np.asarray(self.weights)[j] * (v - lows[j])
        return float(out) if np.ndim(out) == 0 else out

    def marginal(self, value: float) -> float:
        """Weight of the next unit of value at `value` (the band's weight)."""
        j = int(np.searchsorted(np.asarray(self.lows), value, side="right") - 1)
        return self.weights[max(j, 0)]
