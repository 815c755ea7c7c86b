"""A replay as one self-contained HTML file: the chart as inline SVG, the numbers behind it
as embedded JSON, and tables of what happened. Nothing is loaded from elsewhere, so it
opens offline."""

from __future__ import annotations

import html
import math

import orjson

from monitor.analysis.charts import ReplayChart
from monitor.execution.journaled import legs_text
from monitor.model import iso_ms

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.liq { color: #c0392b; font-weight: bold; }
svg { max-width: 100%; height: auto; }
"""


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def chart_data(chart: ReplayChart) -> dict:
    """The data points the chart draws, for anyone who wants them back out of the file."""
    return {
        "title": chart.title,
        "accounts": {a.name: {
            "model": a.model,
            "levels": [{"name": n, "health": t} for n, t in a.levels],
            "protected": [[iso_ms(int(t)), _num(h)] for t, h in zip(a.times_ms, a.health)],
            "baseline": [[iso_ms(int(t)), _num(h)] for t, h in zip(a.baseline_times_ms, a.baseline)],
            "alerts": list(a.alerts), "actions": list(a.actions),
        } for a in chart.accounts},
        "prices": {p.symbol: [[iso_ms(int(t)), float(v)] for t, v in zip(p.times_ms, p.prices)]
                   for p in chart.prices},
        "report": chart.report,
    }


def _fmt(x: float | None, digits: int = 4) -> str:
    return "inf" if x is None else f"{x:.{digits}f}"


def _summary_rows(report: dict) -> str:
    rows = []
    for name, a in report["accounts"].items():
        b = a["baseline"]
        liq = f'<span class="liq">at {a["liquidated_at"]}</span>' if a["liquidated"] else "no"
        base = f'<span class="liq">at {b["liquidated_at"]}</span>' if b["liquidated"] else "no"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(a['model'])}</td>"
                    f"<td>{_fmt(a['min_health'])}</td><td>{liq}</td><td>{len(a['actions'])}</td>"
                    f"<td>{a['traded_notional']:,.2f}</td><td>{a['fees']:,.2f}</td><td>{len(a['alerts'])}</td>"
                    f"<td>{_fmt(b['min_health'])}</td><td>{base}</td></tr>")
    head = ("<tr><th>account</th><th>model</th><th>min health</th><th>liquidated</th><th>actions</th>"
            "<th>traded</th><th>fees</th><th>alerts</th><th>min without actions</th><th>liquidated without</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _action_rows(report: dict) -> str:
    rows = []
    for name, a in report["accounts"].items():
        for act in a["actions"]:
            legs = legs_text(act["orders"], act.get("repays", []), act.get("transfers", []), digits=6)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{act['at']}</td><td>{html.escape(act['level'])}</td>"
                        f"<td>{_fmt(act['health_before'])}</td><td>{_fmt(act['health_after'])}</td>"
                        f"<td>{html.escape('; '.join(legs))}</td></tr>")
    if not rows:
        return "<p>No actions.</p>"
    head = "<tr><th>account</th><th>at</th><th>level</th><th>health before</th><th>after</th><th>orders</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def replay_html(chart: ReplayChart, svg: str) -> str:
    data = orjson.dumps(chart_data(chart)).decode().replace("</", "<\\/")  # cannot close the script element
    title = html.escape(chart.title)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
            f"<figure id=\"chart\">{svg}</figure>\n<h2>Accounts</h2>\n{_summary_rows(chart.report)}\n"
            f"<h2>Actions</h2>\n{_action_rows(chart.report)}\n"
            f"<script type=\"application/json\" id=\"replay-data\">{data}</script>\n</body></html>\n")
