"""Replay charts with matplotlib (Agg, no display needed): per-account small multiples,
a summary for many accounts, and the prices that drove them.

matplotlib is an optional extra (`pip install 'collateral-monitor[plot]'`): the daemon
never needs it, so it is imported only when a chart is asked for.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from monitor.analysis.charts import AccountChart, PriceLine, ReplayChart
from monitor.errors import UserError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LEVEL_COLORS = ("#e69f00", "#0072b2", "#cc79a7", "#009e73", "#56b4e9")
PROTECTED, BASELINE, LIQUIDATION = "#1f4e9c", "#8c8c8c", "#c0392b"


def new_figure(width: float, height: float) -> Figure:
    """A Figure on the Agg canvas, without pyplot's global state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("charts need matplotlib: pip install 'collateral-monitor[plot]'") from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str, flag: str = "--plot") -> None:
    try:
        fig.savefig(path, format="png")
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot write ({err.strerror or err})") from None


def svg_text(fig: Figure) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg")
    text = out.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prolog or DOCTYPE inside HTML


def to_dt(ms: np.ndarray | int) -> np.ndarray:
    return np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")


def iso_dt(text: str) -> np.datetime64:
    return np.datetime64(text.removesuffix("Z"), "ms")


def money(x: float) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def price(p: float) -> str:
    return f"{p:,.2f}" if p >= 100 else f"{p:.4g}"


def date_axis(ax: Axes) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    locator = AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


# -- replay ----------------------------------------------------------------------------
def replay_figure(chart: ReplayChart) -> Figure:
    if chart.summary:
        return summary_figure(chart)
    n = len(chart.accounts)
    cols = 1 if n <= 3 else 2
    rows = math.ceil(n / cols)
    fig = new_figure(10 if cols == 1 else 14, 2.8 * rows + 2.6)
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[3.0] * rows + [2.4])
    first = None
    for j, acc in enumerate(chart.accounts):
        ax = fig.add_subplot(grid[j // cols, j % cols], sharex=first)
        first = first or ax
        health_panel(ax, acc)
        ax.tick_params(labelbottom=False)  # the price panel below carries the dates
    price_panel(fig.add_subplot(grid[rows, :], sharex=first), chart.prices)
    fig.suptitle(chart.title, fontsize=11)
    return fig


def health_panel(ax: Axes, acc: AccountChart) -> None:
    base = np.where(np.isfinite(acc.baseline), acc.baseline, np.nan)
    prot = np.where(np.isfinite(acc.health), acc.health, np.nan)
    ax.plot(to_dt(acc.baseline_times_ms), base, color=BASELINE, lw=1.1, ls="--", label="without actions",
            gid="baseline")
    ax.plot(to_dt(acc.times_ms), prot, color=PROTECTED, lw=1.5, label="protected", gid="protected")
    ax.axhline(1.0, color=LIQUIDATION, lw=1.2)
    ax.axhspan(0, 1.0, color=LIQUIDATION, alpha=0.07)
    ax.annotate("liquidation (health 1)", (1.0, 1.0), xycoords=("axes fraction", "data"), ha="right",
                va="top", fontsize=7, color=LIQUIDATION)
    colors = {}
    for j, (name, threshold) in enumerate(acc.levels):
        colors[name] = LEVEL_COLORS[j % len(LEVEL_COLORS)]
        ax.axhline(threshold, color=colors[name], lw=0.9, ls=":")
        ax.annotate(f"{name} {threshold:.3g}", (1.0, threshold), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=7, color=colors[name])
    alert_markers(ax, acc, colors)
    action_markers(ax, acc)
    ax.set_ylim(*health_limits(acc, np.concatenate([base, prot])))
    ax.set_ylabel("health")
    ax.set_title(account_title(acc), fontsize=9, loc="left")
    ax.legend(loc="best", fontsize=7, ncol=3, framealpha=0.85)
    ax.grid(alpha=0.25)


def alert_markers(ax: Axes, acc: AccountChart, colors: dict[str, str]) -> None:
    for state, marker in (("firing", "v"), ("resolved", "^")):
        hits = [a for a in acc.alerts if a["state"] == state and a["health"] is not None]
        for level in sorted({a["level"] for a in hits}):
            mine = [a for a in hits if a["level"] == level]
            color = colors.get(level, "black")
            ax.scatter([iso_dt(a["at"]) for a in mine], [a["health"] for a in mine], marker=marker, s=28,
                       color=color if state == "firing" else "none", edgecolors=color, zorder=4,
                       label=f"{level} {state}", gid=f"alerts-{level}-{state}")


def action_markers(ax: Axes, acc: AccountChart) -> None:
    acts = [a for a in acc.actions if a["health_before"] is not None and a["health_after"] is not None]
    if not acts:
        return
    notional = np.array([sum(o["amount"] * o["price"] for o in a["orders"]) for a in acts])
    sizes = 30 + 220 * np.sqrt(notional / max(notional.max(), 1e-12))
    at = [iso_dt(a["at"]) for a in acts]
    ax.vlines(at, [a["health_before"] for a in acts], [a["health_after"] for a in acts], color="#2e7d32", lw=1.2)
    ax.scatter(at, [a["health_after"] for a in acts], s=sizes, color="#2e7d32", alpha=0.75, zorder=5,
               label="action (size = notional)", gid="actions")
    for n, (t, a, x) in enumerate(zip(at, acts, notional)):
        text = f"{money(x)}" if x > 0 else "repay"
        ax.annotate(text, (t, a["health_after"]), xytext=(5, 4 - 11 * (n % 2)), textcoords="offset points",
                    fontsize=7, color="#2e7d32")  # neighbours alternate above and below, so close ones stay legible


def health_limits(acc: AccountChart, values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    top_level = max((t for _, t in acc.levels), default=1.0)
    if not len(finite):
        return 0.8, top_level * 1.3
    lo = min(0.9, float(finite.min()) * 0.97)
    hi = max(top_level * 1.15, min(float(finite.max()) * 1.03, max(top_level, 1.0) * 2.5))
    return lo, hi


def account_title(acc: AccountChart) -> str:
    def low(v: np.ndarray) -> str:
        f = v[np.isfinite(v)]
        return f"{f.min():.3f}" if len(f) else "n/a"
    liq = " LIQUIDATED" if len(acc.health) and np.nanmin(acc.health) < 1 else ""
    base_liq = " (liquidated)" if len(acc.baseline) and np.nanmin(acc.baseline) < 1 else ""
    return (f"{acc.name} ({acc.model}): min health {low(acc.health)}{liq}, {len(acc.actions)} action(s); "
            f"without actions min {low(acc.baseline)}{base_liq}")


def price_panel(ax: Axes, prices: tuple[PriceLine, ...]) -> None:
    for line in prices:
        change = (line.prices / line.prices[0] - 1) * 100
        ax.plot(to_dt(line.times_ms), change, lw=1.1,
                label=f"{line.symbol} {price(line.prices[0])} to {price(line.prices[-1])}", gid=f"price-{line.symbol}")
    ax.axhline(0, color="black", lw=0.6)
    date_axis(ax)
    ax.set_ylabel("% from start")
    ax.set_title("prices (lowest per interval)", fontsize=9, loc="left")
    ax.legend(loc="lower left", fontsize=7, ncol=3, framealpha=0.8)
    ax.grid(alpha=0.25)


def summary_figure(chart: ReplayChart) -> Figure:
    """Many accounts: the distribution of minimum health, protected against no actions."""
    fig = new_figure(10, 6.5)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 2])
    ax = fig.add_subplot(grid[0])
    accounts = chart.report["accounts"].values()
    protected = np.array([a["min_health"] if a["min_health"] is not None else np.inf for a in accounts])
    baseline = np.array([a["baseline"]["min_health"] if a["baseline"]["min_health"] is not None else np.inf
                         for a in accounts])
    finite = np.concatenate([protected, baseline])
    finite = finite[np.isfinite(finite)]
    hi = float(np.quantile(finite, 0.98)) if len(finite) else 2.0
    bins = np.linspace(min(0.5, float(finite.min()) if len(finite) else 0.5), max(hi, 1.5), 40)
    liq_p, liq_b = int((protected < 1).sum()), int((baseline < 1).sum())
    ax.hist(np.clip(baseline, bins[0], bins[-1]), bins=bins, color=BASELINE, alpha=0.55,
            label=f"without actions: {liq_b} liquidated", gid="hist-baseline")
    ax.hist(np.clip(protected, bins[0], bins[-1]), bins=bins, color=PROTECTED, alpha=0.55,
            label=f"protected: {liq_p} liquidated", gid="hist-protected")
    ax.axvline(1.0, color=LIQUIDATION, lw=1.2)
    ax.set_xlabel("minimum health over the replay")
    ax.set_ylabel("accounts")
    ax.set_title(f"{len(protected)} accounts", fontsize=9, loc="left")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.25)
    price_panel(fig.add_subplot(grid[1]), chart.prices)
    fig.suptitle(chart.title, fontsize=11)
    return fig
