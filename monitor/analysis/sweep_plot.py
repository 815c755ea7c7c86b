"""A sweep as heat maps: one panel per account (and per value of any third parameter), the
first swept parameter across, the second down; colour is the minimum health, each cell
says its fees, and a liquidated cell says so."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

from monitor.analysis.plot import money, new_figure
from monitor.analysis.sweep import Axis, SweepResult
from monitor.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PANELS = 24


def facets(axes: tuple[Axis, ...]) -> list[tuple[float, ...]]:
    return list(itertools.product(*(a.values for a in axes[2:])))


def check_plottable(axes: tuple[Axis, ...], n_accounts: int) -> None:
    panels = len(facets(axes)) * n_accounts
    if panels > MAX_PANELS:
        raise UserError(f"--plot: {panels} heat maps (accounts x values of the third and later --vary) is too many "
                        f"to read; at most {MAX_PANELS}")


def sweep_figure(result: SweepResult) -> Figure:
    from matplotlib.colors import TwoSlopeNorm

    axes = result.axes
    xs, ys = axes[0].values, (axes[1].values if len(axes) > 1 else (None,))
    groups = facets(axes)
    rows, cols = len(result.accounts), len(groups)
    fig = new_figure(max(5.0, 0.9 * len(xs) + 2.5) * cols, max(3.4, 0.6 * len(ys) + 2.2) * rows)
    grid = fig.subplots(rows, cols, squeeze=False)
    values = [o["min_health"] for per in result.outcomes.values() for o in per.values() if o["min_health"] is not None]
    top = max([v for v in values if math.isfinite(v)] + [1.2])
    norm = TwoSlopeNorm(vmin=min(values + [0.9]), vcenter=1.0, vmax=max(top, 1.01))
    image = None
    for r, account in enumerate(result.accounts):
        for c, rest in enumerate(groups):
            ax = grid[r][c]
            health, labels = _panel_values(result, account, xs, ys, rest)
            image = ax.imshow(health, cmap="RdYlGn", norm=norm, aspect="auto", origin="lower")
            for (j, i), text in np.ndenumerate(labels):
                ax.text(i, j, text, ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
            ax.set_yticks(range(len(ys)), [f"{y:g}" if y is not None else "" for y in ys])
            ax.set_xlabel(axes[0].key)
            if len(axes) > 1:
                ax.set_ylabel(axes[1].key)
            extra = ", ".join(f"{a.key}={v:g}" for a, v in zip(axes[2:], rest))
            ax.set_title(account + (f" ({extra})" if extra else ""), fontsize=9, loc="left")
    fig.colorbar(image, ax=grid, label="minimum health (red: below 1)", shrink=0.8)
    fig.suptitle("sweep: minimum health; fees in each cell", fontsize=10)
    return fig


def _panel_values(result: SweepResult, account: str, xs, ys, rest) -> tuple[np.ndarray, np.ndarray]:
    health = np.full((len(ys), len(xs)), np.nan)
    labels = np.full((len(ys), len(xs)), "skipped", dtype=object)
    for cell in result.cells:
        x, y = cell.values[0], (cell.values[1] if len(cell.values) > 1 else None)
        if tuple(cell.values[2:]) != tuple(rest) or cell.index not in result.outcomes:
            continue
        o = result.outcomes[cell.index][account]
        i, j = xs.index(x), ys.index(y)
        health[j, i] = o["min_health"] if o["min_health"] is not None else np.nan
        labels[j, i] = (f"LIQ\n{health[j, i]:.2f}" if o["liquidated"] else
                        f"{health[j, i]:.3f}\nfees {money(o['fees'])}\n{o['actions']} act")
    return health, labels
