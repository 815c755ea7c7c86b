"""Sweeps: the replay over a grid of level parameters, one cell per combination.

Cells run in a process pool (each cell is an independent, deterministic replay), and
results are put back in grid order, so the output never depends on scheduling.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from monitor.config import Settings, parse_settings
from monitor.core import Monitor, check_strategies
from monitor.errors import UserError
from monitor.feeds.price_file import PriceSeries
from strategies import default_registry

THRESHOLD_KEYS = ("health", "ltv", "margin_level", "mm_rate")
TARGET_KEYS = ("target", "target_ltv", "target_margin_level", "target_mm_rate")
NUMERIC_PARAMS = (*THRESHOLD_KEYS, *TARGET_KEYS, "confirm_s", "cooldown_s", "hysteresis", "max_notional")
MAX_CELLS = 5000


@dataclass(frozen=True)
class Axis:
    level: str
    param: str
    values: tuple[float, ...]

    @property
    def key(self) -> str:
        return f"{self.level}.{self.param}"


def parse_vary(text: str, settings: Settings) -> Axis:
    """`LEVEL.PARAM=START:STOP:STEP` (STOP included) or `LEVEL.PARAM=V1,V2,...`."""
    name, sep, spec = text.partition("=")
    level, dot, param = name.strip().partition(".")
    if not sep or not dot or not level or not param or not spec.strip():
        raise UserError(f"--vary {text!r}: expected LEVEL.PARAM=START:STOP:STEP or LEVEL.PARAM=V1,V2")
    if param not in NUMERIC_PARAMS:
        raise UserError(f"--vary {text!r}: unknown level parameter {param!r} (one of {', '.join(NUMERIC_PARAMS)})")
    known = sorted({lv.name for acc in settings.accounts for lv in acc.levels})
    if level not in known:
        raise UserError(f"--vary {text!r}: no account has a level named {level!r} (levels: {', '.join(known)})")
    return Axis(level, param, _values(text, spec.strip()))


def _values(text: str, spec: str) -> tuple[float, ...]:
    try:
        if ":" in spec:
            parts = [Decimal(p) for p in spec.split(":")]
            if len(parts) != 3:
                raise InvalidOperation
            start, stop, step = parts
            if not step > 0 or stop < start:
                raise UserError(f"--vary {text!r}: a range needs STOP >= START and STEP > 0")
            count = int((stop - start) / step) + 1
            if count > MAX_CELLS:
                raise UserError(f"--vary {text!r}: {count} values is too many (at most {MAX_CELLS})")
            values = [float(start + i * step) for i in range(count)]  # Decimal: 1.05 + 4*0.05 is 1.25 exactly
        else:
            values = [float(Decimal(v)) for v in spec.split(",")]
    except (InvalidOperation, ValueError):
        raise UserError(f"--vary {text!r}: not a number range or list") from None
    if any(not v >= 0 for v in values) or len(set(values)) != len(values):
        raise UserError(f"--vary {text!r}: values must be distinct numbers >= 0")
    return tuple(values)


@dataclass(frozen=True)
class Cell:
    index: int
    values: tuple[float, ...]  # one per axis
    settings: Settings | None  # None: the combination is not a valid config
    problem: str = ""


def cell_settings(settings: Settings, axes: Sequence[Axis], values: Sequence[float]) -> Settings:
    """The config with every level named by an axis set to that axis' value; raises ConfigError."""
    raw = settings.model_dump(exclude_none=True)
    for axis, value in zip(axes, values):
        family = next((f for f in (THRESHOLD_KEYS, TARGET_KEYS) if axis.param in f), ())
        for acc in raw["accounts"]:
            for lv in acc.get("levels", []):
                if lv["name"] == axis.level:
                    for other in family:  # one threshold (target) per level: the swept one replaces it
                        lv.pop(other, None)
                    lv[axis.param] = float(value)
    cell = parse_settings(raw, "sweep")
    check_strategies(Monitor(cell, default_registry()))  # level order, targets above levels, strategy fit
    return cell


def grid(settings: Settings, axes: Sequence[Axis]) -> list[Cell]:
    combos = list(itertools.product(*(a.values for a in axes)))
    if len(combos) > MAX_CELLS:
        raise UserError(f"--vary: the grid has {len(combos)} cells (at most {MAX_CELLS})")
    cells = []
    for n, values in enumerate(combos):
        try:
            cells.append(Cell(n, values, cell_settings(settings, axes, values)))
        except UserError as err:
            cells.append(Cell(n, values, None, str(err).removeprefix("sweep: ")))
    if not any(c.settings for c in cells):
        raise UserError(f"--vary: no cell of the grid is a valid config ({cells[0].problem})")
    return cells


# -- running ---------------------------------------------------------------------------------
def run_cell(settings: Settings, series: Sequence[PriceSeries]) -> dict[str, dict]:
    """One replay, reduced to what the sweep table shows per account."""
    from monitor.replay import run_replay

    report = run_replay(settings, series, default_registry())
    return {name: outcome(a) for name, a in report["accounts"].items()}


def outcome(a: dict) -> dict:
    """The sweep's figures of one account of a replay report."""
    return {
        "liquidated": a["liquidated"], "liquidated_at": a["liquidated_at"],
        "min_health": a["min_health"], "min_health_at": a["min_health_at"],
        "actions": len(a["actions"]), "traded_notional": a["traded_notional"], "fees": a["fees"],
        "alerts": len(a["alerts"]),
        "baseline_min_health": a["baseline"]["min_health"], "baseline_liquidated": a["baseline"]["liquidated"],
    }


@dataclass(frozen=True)
class SweepResult:
    axes: tuple[Axis, ...]
    cells: tuple[Cell, ...]
    outcomes: dict[int, dict[str, dict]]  # cell index -> account -> outcome
    accounts: tuple[str, ...]


def run_sweep(settings: Settings, axes: Sequence[Axis], series: Sequence[PriceSeries], jobs: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> SweepResult:
    cells = grid(settings, axes)
    todo = [c for c in cells if c.settings is not None]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    outcomes: dict[int, dict[str, dict]] = {}
    if jobs == 1:
        results = (run_cell(c.settings, series) for c in todo)
        _collect(todo, results, outcomes, progress)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = pool.map(run_cell, [c.settings for c in todo], itertools.repeat(series))
            _collect(todo, results, outcomes, progress)
    return SweepResult(tuple(axes), tuple(cells), outcomes, tuple(a.name for a in settings.accounts))


def _collect(todo: list[Cell], results, outcomes: dict, progress) -> None:
    for n, (cell, result) in enumerate(zip(todo, results), 1):  # map() yields in submission order
        outcomes[cell.index] = result
        if progress is not None:
            progress(n, len(todo))


def ranked(result: SweepResult, account: str) -> list[tuple[Cell, dict]]:
    """The account's cells, the cheapest that survives first: not liquidated, then lowest fees,
    notional, actions and alerts, then the safest; the liquidated ones after, safest first."""
    rows = [(c, result.outcomes[c.index][account]) for c in result.cells if c.index in result.outcomes]

    def key(row: tuple[Cell, dict]):
        cell, o = row
        safety = -(o["min_health"] if o["min_health"] is not None else float("inf"))
        if o["liquidated"]:
            return (1, safety, 0.0, 0.0, 0, 0, cell.index)
        return (0, o["fees"], o["traded_notional"], o["actions"], o["alerts"], safety, cell.index)
    return sorted(rows, key=key)
