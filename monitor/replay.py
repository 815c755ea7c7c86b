"""Replay: the daemon's engine, rules, strategies and paper executor over price files.

Event time only, so it runs as fast as the CPU allows and is deterministic. Each
account is also replayed without actions (the baseline) so the report shows what
the daemon saved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from monitor.config import Settings
from monitor.core import Monitor
from monitor.execution.journaled import execution_record_fills
from monitor.execution.paper import PaperExecutor
from monitor.feeds.price_file import PriceSeries, merge_series
from monitor.model import EventKind, LevelEvent, Plan, PriceTick, iso_ms
from monitor.risk.engine import RiskEngine
from monitor.risk.portfolio import liquidated
from strategies.base import StrategyRegistry

Progress = Callable[[int, int], None]  # (ticks done, ticks total)
EventHook = Callable[[Monitor, LevelEvent], None]  # sees each event with the state it happened in


class Sampler(Protocol):
    """Sees health as each tick left it (before any rescue trade), for charts."""

    def record(self, run: str, idx: np.ndarray, health: np.ndarray, ts_ms: int) -> None: ...


class HealthTrack:
    """Per-account extremes of health over a run, updated only for the accounts a tick touched."""

    def __init__(self, n: int):
        self.start = np.full(n, np.nan)
        self.min = np.full(n, np.inf)
        self.min_at = np.zeros(n, dtype=np.int64)
        self.liquidated_at = np.full(n, -1, dtype=np.int64)

    def update(self, idx: np.ndarray, health: np.ndarray, ts_ms: int) -> None:
        h = health[idx]
        fresh = np.isnan(self.start[idx]) & ~np.isnan(h)
        self.start[idx[fresh]] = h[fresh]
        lower = h < self.min[idx]
        self.min[idx[lower]] = h[lower]
        self.min_at[idx[lower]] = ts_ms
        first_liq = liquidated(h) & (self.liquidated_at[idx] < 0)
        self.liquidated_at[idx[first_liq]] = ts_ms

    def liquidated(self, i: int) -> bool:
        return bool(self.liquidated_at[i] >= 0)

    def liquidated_iso(self, i: int) -> str | None:
        return iso_ms(int(self.liquidated_at[i])) if self.liquidated(i) else None


def _num(x: float) -> float | None:
    """JSON has no inf/nan: infinite health (no debt) is reported as null."""
    return float(x) if math.isfinite(x) else None


class Replay:
    def __init__(self, settings: Settings, registry: StrategyRegistry, sampler: Sampler | None = None,
                 on_event: EventHook | None = None):
        self.settings = settings
        self.sampler = sampler
        self.on_event = on_event
        self.monitor = Monitor(settings, registry)
        m = self.monitor
        self.baseline = RiskEngine(list(m.engine.books), list(m.engine.assets), m.fixed_prices)
        self.executor = PaperExecutor(m.quote, settings.execution.fee_rate, settings.execution.slippage,
                                      lambda: m.now_ms)
        n = len(m.engine.books)
        self.track, self.base_track = HealthTrack(n), HealthTrack(n)
        self.alerts: list[list[dict]] = [[] for _ in range(n)]
        self.notices: list[list[dict]] = [[] for _ in range(n)]
        self.actions: list[list[dict]] = [[] for _ in range(n)]
        self.traded = np.zeros(n)
        self.fees = np.zeros(n)

    def step(self, tick: PriceTick) -> None:
        m = self.monitor
        bad = m.bad_ticks
        outcomes = m.on_tick(tick)
        if m.bad_ticks > bad:
            return
        # Health as the tick left it, before any rescue trade: a wick below 1 is a liquidation.
        for k in m.assets_by_symbol.get(tick.symbol, ()):
            idx = m.engine.columns[k].idx
            base_idx = self.baseline.apply(k, tick.price, tick.ts_ms)
            self.track.update(idx, m.engine.health, tick.ts_ms)
            self.base_track.update(base_idx, self.baseline.health, tick.ts_ms)
            if self.sampler is not None:
                self.sampler.record("protected", idx, m.engine.health, tick.ts_ms)
                self.sampler.record("baseline", base_idx, self.baseline.health, tick.ts_ms)
        for item in outcomes:
            if isinstance(item, Plan):
                self._execute(item)
            else:
                self._record_event(item)

    def _execute(self, plan: Plan) -> None:
        m = self.monitor
        i = m.engine.account_index[plan.account]
        execution = self.executor.execute_now(plan)
        if execution.duplicate:
            m.abandon(plan)
            return
        settled = m.settle(plan, execution)
        legs = execution_record_fills(execution)
        self.traded[i] += sum(f.notional for f in execution.fills)
        self.fees[i] += sum(f.fee for f in execution.fills)
        self.actions[i].append({
            "at": iso_ms(plan.ts_ms), "level": plan.level, "strategy": plan.strategy,
            "health_before": _num(settled.health_before), "health_after": _num(settled.health_after),
            "expected_health": _num(plan.expected_health), "plan_id": plan.plan_id,
            "orders": legs["fills"], "repays": legs["repays"], "transfers": legs["transfers"],
            "note": plan.note,
        })
        if settled.event is not None:
            self._record_event(settled.event)

    def _record_event(self, ev: LevelEvent) -> None:
        i = self.monitor.engine.account_index[ev.account]
        if self.on_event is not None:
            self.on_event(self.monitor, ev)
        if ev.kind in (EventKind.FIRING, EventKind.RESOLVED):
            self.alerts[i].append({"at": iso_ms(ev.ts_ms), "level": ev.level, "state": ev.kind.value,
                                   "health": _num(ev.health)})
        else:
            self.notices[i].append({"at": iso_ms(ev.ts_ms), "level": ev.level, "kind": ev.kind.value,
                                    "health": _num(ev.health), "detail": ev.detail})

    def report(self, ticks: int, bad: dict[str, dict], start_ms: int | None, end_ms: int | None, wall: float) -> dict:
        """`bad`: per price file with bad rows, their count and first line numbers."""
        m = self.monitor
        accounts = {}
        for i, book in enumerate(m.engine.books):
            accounts[book.name] = {
                "model": book.model,
                "start_health": _num(self.track.start[i]),
                "end_health": _num(m.engine.health[i]),
                "min_health": _num(self.track.min[i]),
                "min_health_at": iso_ms(int(self.track.min_at[i])) if math.isfinite(self.track.min[i]) else None,
                "liquidated": self.track.liquidated(i),
                "liquidated_at": self.track.liquidated_iso(i),
                "alerts": self.alerts[i],
                "actions": self.actions[i],
                "notices": self.notices[i],
                "baseline": {"min_health": _num(self.base_track.min[i]), "liquidated": self.base_track.liquidated(i),
                             "liquidated_at": self.base_track.liquidated_iso(i),
                             "end_health": _num(self.baseline.health[i])},
                "traded_notional": float(self.traded[i]),
                "fees": float(self.fees[i]),
            }
        return {"accounts": accounts, "ticks": ticks, "bad_rows": sum(b["rows"] for b in bad.values()),
                "bad_rows_by_file": bad, "start": iso_ms(start_ms),
                "end": iso_ms(end_ms), "wall_seconds": round(wall, 3)}


def run_replay(settings: Settings, series: Sequence[PriceSeries], registry: StrategyRegistry,
               progress: Progress | None = None, sampler: Sampler | None = None,
               on_event: EventHook | None = None) -> dict:
    """Replays the merged series and returns the report (a dict ready for JSON)."""
    t0 = time.perf_counter()
    replay = Replay(settings, registry, sampler, on_event)
    merged = merge_series(series)
    total = len(merged)
    for n, tick in enumerate(merged, 1):
        replay.step(tick)
        if progress is not None and n % 5000 == 0:
            progress(n, total)
    if progress is not None and total:
        progress(total, total)  # a bar ends full
    start = int(merged.ts_ms[0]) if total else None
    end = int(merged.ts_ms[-1]) if total else None
    bad = {s.path: {"rows": s.bad_rows, "lines": list(s.bad_lines)} for s in series if s.bad_rows}
    return replay.report(total, bad, start, end, time.perf_counter() - t0)
