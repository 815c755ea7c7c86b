"""A sweep as text tables (one per account, cheapest survivor on top) and as CSV."""

from __future__ import annotations

import csv
import io

from monitor.analysis.sweep import SweepResult, ranked

FIELDS = ("liquidated", "liquidated_at", "min_health", "min_health_at", "actions", "traded_notional", "fees",
          "alerts", "baseline_min_health", "baseline_liquidated")


def _h(x: float | None) -> str:
    return "inf" if x is None else f"{x:.4f}"


def _v(x: float) -> str:
    return f"{x:g}"


def account_table(result: SweepResult, account: str, limit: int | None = None) -> list[str]:
    rows = ranked(result, account)
    if not rows:
        return []
    first = rows[0][1]
    base = "LIQUIDATED" if first["baseline_liquidated"] else "not liquidated"
    lines = [f"{account}: without actions min health {_h(first['baseline_min_health'])}, {base}"]
    head = [a.key for a in result.axes] + ["liquidated", "min health", "actions", "traded", "fees", "alerts"]
    body = []
    for cell, o in rows[:limit]:
        liq = f"at {o['liquidated_at'][:19].replace('T', ' ')}" if o["liquidated"] else "no"
        figures = [liq, _h(o["min_health"]), str(o["actions"]), f"{o['traded_notional']:,.2f}", f"{o['fees']:,.2f}",
                   str(o["alerts"])]
        body.append([_v(v) for v in cell.values] + figures)
    widths = [max(len(r[j]) for r in [head, *body]) for j in range(len(head))]
    n_axes = len(result.axes)
    for r in [head, *body]:
        cells = [c.ljust(w) if j < n_axes + 1 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    if limit is not None and len(rows) > limit:
        lines.append(f"  ... {len(rows) - limit} more (--csv has them all)")
    return lines


def sweep_text(result: SweepResult, limit: int | None = None) -> str:
    ran = len(result.outcomes)
    lines = [f"swept {ran} cell(s) over " + " x ".join(f"{a.key} ({len(a.values)})" for a in result.axes)]
    skipped = [c for c in result.cells if c.settings is None]
    for c in skipped:
        lines.append(f"  skipped {', '.join(f'{a.key}={_v(v)}' for a, v in zip(result.axes, c.values))}: {c.problem}")
    for account in result.accounts:
        lines.append("")
        lines += account_table(result, account, limit)
    return "\n".join(lines) + "\n"


def sweep_csv(result: SweepResult) -> str:
    """The raw grid: one row per cell and account, in grid order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["cell", *(a.key for a in result.axes), "account", *FIELDS])
    for cell in result.cells:
        if cell.index not in result.outcomes:
            continue
        for account in result.accounts:
            o = result.outcomes[cell.index][account]
            writer.writerow([cell.index, *(_v(v) for v in cell.values), account,
                             *("" if o[f] is None else o[f] for f in FIELDS)])
    return out.getvalue()
