"""EWMA volatility of log returns, sampled on fixed time bars, per asset.

Sampling on bars (not ticks) keeps the estimate independent of how often a venue
sends updates. lambda = 0.94 is RiskMetrics' daily decay; on one-minute bars it
reacts within tens of minutes, which is what a liquidation distance needs.
"""

from __future__ import annotations

import math

import numpy as np

DAY_MS = 86_400_000


class VolatilityTracker:
    def __init__(self, n_assets: int, bar_ms: int = 60_000, decay: float = 0.94, min_bars: int = 10):
        self.bar_ms = bar_ms
        self.decay = decay
        self.min_bars = min_bars
        self.bar = np.full(n_assets, -1, dtype=np.int64)  # current bar number per asset
        self.close = np.full(n_assets, np.nan)  # last price in the current bar
        self.prev_close = np.full(n_assets, np.nan)  # close of the previous bar
        self.var = np.zeros(n_assets)  # EWMA variance per bar
        self.samples = np.zeros(n_assets, dtype=np.int64)

    def update(self, k: int, price: float, ts_ms: int) -> None:
        bar = ts_ms // self.bar_ms
        if bar > self.bar[k]:
            if not math.isnan(self.close[k]) and not math.isnan(self.prev_close[k]):
                r = math.log(self.close[k]) - math.log(self.prev_close[k])  # a quotient of extremes overflows
                self.var[k] = self.decay * self.var[k] + (1 - self.decay) * r * r if self.samples[k] else r * r
                self.samples[k] += 1
            self.prev_close[k] = self.close[k]
            self.bar[k] = bar
        self.close[k] = price

    def copy_asset(self, old: VolatilityTracker, j: int, k: int) -> None:
        """Asset k takes over the estimate `old` has for its asset j (a config reload)."""
        for name in ("bar", "close", "prev_close", "var", "samples"):
            getattr(self, name)[k] = getattr(old, name)[j]

    def daily(self, k: int) -> float | None:
        """Daily volatility (stdev of log returns), None until enough bars were seen."""
        if self.samples[k] < self.min_bars:
            return None
        return math.sqrt(self.var[k] * DAY_MS / self.bar_ms)
