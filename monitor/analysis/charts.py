"""What a replay chart shows, gathered from a replay: no drawing here (no matplotlib needed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitor.accounts.static import account_scale
from monitor.analysis.sampling import HealthSampler, bucket_prices
from monitor.config import Settings
from monitor.feeds.price_file import PriceSeries
from monitor.rules import build_account_rules

SMALL_MULTIPLES_MAX = 8  # above this many accounts, a summary chart instead of one panel each


@dataclass(frozen=True)
class AccountChart:
    name: str
    model: str
    times_ms: np.ndarray  # bucket starts with a tick
    health: np.ndarray  # lowest protected health per bucket
    baseline_times_ms: np.ndarray
    baseline: np.ndarray  # lowest health without actions per bucket
    levels: tuple[tuple[str, float], ...]  # (name, health threshold), highest first
    alerts: tuple[dict, ...]  # the report's firing/resolved alerts
    actions: tuple[dict, ...]  # the report's actions


@dataclass(frozen=True)
class PriceLine:
    symbol: str
    times_ms: np.ndarray
    prices: np.ndarray


@dataclass(frozen=True)
class ReplayChart:
    title: str
    accounts: tuple[AccountChart, ...]  # empty: too many accounts, draw the summary
    prices: tuple[PriceLine, ...]
    report: dict

    @property
    def summary(self) -> bool:
        return not self.accounts


def sampler_for(settings: Settings, series: Sequence[PriceSeries]) -> HealthSampler | None:
    """A sampler over every account when each gets a panel; None when the chart is a summary."""
    n = len(settings.accounts)
    return HealthSampler.for_series(n, range(n), series) if n <= SMALL_MULTIPLES_MAX else None


def level_lines(settings: Settings) -> dict[str, tuple[tuple[str, float], ...]]:
    """Each account's levels in health units (native-unit levels converted), highest first."""
    out = {}
    for acc in settings.accounts:
        rules = build_account_rules(acc, account_scale(acc)[1])
        out[acc.name] = tuple((lv.name, lv.threshold) for lv in rules.levels)
    return out


def build_chart(settings: Settings, series: Sequence[PriceSeries], report: dict,
                sampler: HealthSampler | None) -> ReplayChart:
    levels = level_lines(settings)
    accounts = []
    if sampler is not None:
        for col, i in enumerate(sampler.accounts.tolist()):
            name = settings.accounts[i].name
            a = report["accounts"][name]
            t, h = sampler.series_of("protected", col)
            bt, bh = sampler.series_of("baseline", col)
            accounts.append(AccountChart(name, a["model"], t, h, bt, bh, levels[name],
                                         tuple(a["alerts"]), tuple(a["actions"])))
    start = sampler.start_ms if sampler else min((int(s.ts_ms[0]) for s in series if len(s)), default=0)
    end = start + sampler.span_ms if sampler else max((int(s.ts_ms[-1]) for s in series if len(s)), default=0)
    prices = tuple(PriceLine(s.symbol, *bucket_prices(s, start, end)) for s in series if len(s))
    title = f"replay {report['start']} to {report['end']}"
    return ReplayChart(title, tuple(accounts), prices, report)
