"""Health over time for charts, recorded during a replay in fixed time buckets.

A replay can run hundreds of thousands of ticks; a chart needs a few hundred
points. Each bucket keeps the lowest health seen in it, so a one-minute wick that
liquidates still shows. Only the accounts a chart draws are recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monitor.feeds.price_file import PriceSeries

RUNS = ("protected", "baseline")


class HealthSampler:
    def __init__(self, n_accounts: int, accounts: Sequence[int], start_ms: int, end_ms: int, buckets: int = 600):
        self.accounts = np.asarray(accounts, dtype=np.int64)
        self.start_ms = int(start_ms)
        self.span_ms = max(int(end_ms) - self.start_ms, 1)
        self.buckets = buckets
        self.column = np.full(n_accounts, -1, dtype=np.int64)  # account index -> column, -1: not drawn
        self.column[self.accounts] = np.arange(len(self.accounts))
        self.lowest = {run: np.full((buckets, len(self.accounts)), np.nan) for run in RUNS}

    @classmethod
    def for_series(cls, n_accounts: int, accounts: Sequence[int], series: Sequence[PriceSeries],
                   buckets: int = 600) -> HealthSampler:
        present = [s for s in series if len(s)]
        start = min((int(s.ts_ms[0]) for s in present), default=0)
        end = max((int(s.ts_ms[-1]) for s in present), default=start)
        return cls(n_accounts, accounts, start, end, buckets)

    def bucket(self, ts_ms: int) -> int:
        return min(self.buckets - 1, max(0, (ts_ms - self.start_ms) * self.buckets // self.span_ms))

    def record(self, run: str, idx: np.ndarray, health: np.ndarray, ts_ms: int) -> None:
        cols = self.column[idx]
        keep = cols >= 0
        if not keep.any():
            return
        row = self.lowest[run][self.bucket(ts_ms)]
        cols = cols[keep]
        row[cols] = np.fmin(row[cols], health[idx[keep]])  # fmin: a first value replaces NaN

    def times_ms(self) -> np.ndarray:
        """The start of each bucket."""
        return self.start_ms + (np.arange(self.buckets) * self.span_ms) // self.buckets

    def series_of(self, run: str, column: int) -> tuple[np.ndarray, np.ndarray]:
        """(times, lowest health) of one drawn account, buckets without a tick left out."""
        h = self.lowest[run][:, column]
        seen = ~np.isnan(h)
        return self.times_ms()[seen], h[seen]


def bucket_prices(series: PriceSeries, start_ms: int, end_ms: int, buckets: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """(times, lowest price) per bucket of one price series: what drove the health panel."""
    if not len(series):
        return np.empty(0, np.int64), np.empty(0)
    span = max(end_ms - start_ms, 1)
    b = np.clip((series.ts_ms - start_ms) * buckets // span, 0, buckets - 1)
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])  # ts is sorted, so buckets are runs
    return series.ts_ms[starts], np.minimum.reduceat(series.price, starts)
