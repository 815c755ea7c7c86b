"""What the live status page shows, as one JSON-ready dict built from the daemon's state.

The least healthy accounts come first (unknown health before all), capped at
`limit`, so a desk watching thousands of loans sees the ones that matter and the
page stays small on a phone.
"""

from __future__ import annotations

import math

import numpy as np

from monitor.daemon import Daemon, Executed, feed_live, status_line
from monitor.execution.journaled import execution_record_fills, legs_text
from monitor.model import iso_ms, json_number


def _num(x: float) -> float | str | None:
    """JSON has no inf or nan: infinite health (no debt) is "inf", unknown is null."""
    return json_number(float(x))


def snapshot(d: Daemon, limit: int) -> dict:
    m = d.monitor
    health = m.engine.health
    order = np.argsort(np.where(np.isnan(health), -np.inf, health), kind="stable")[:limit]
    return {
        "summary": status_line(d),
        "mode": d.settings.execution.mode,
        "now": iso_ms(m.now_ms) if m.now_ms else None,
        "accounts_total": len(health),
        "accounts": [account_row(d, int(i)) for i in order],
        "alerts": active_alerts(d),
        "actions": [action_row(done, after) for done, after in reversed(d.recent_actions)],
        "feeds": [{"name": f.name, "live": feed_live(d, f.name)} for f in d.feeds],
    }


def account_row(d: Daemon, i: int) -> dict:
    m = d.monitor
    st = m.status(i)
    levels = m.rules.accounts[i].levels
    return {
        "name": st.name,
        "model": st.model,
        "health": _num(st.health),
        "native": _num(st.native),
        "equity": _num(st.equity),
        "level": st.level,
        "depth": int(m.rules.depth[i]),
        "levels": [{"name": lv.name, "health": lv.threshold, "action": lv.action} for lv in levels],
        "stale": st.stale,
        "unpriced": list(st.unpriced),  # held assets without any price yet: "no price" on the page
        "venue": calibration_of(d, st.name),  # the venue's own figure at the last sync, and the residual
        "exposures": [{"asset": e.asset, "price": e.price, "liquidation_price": e.liquidation_price,
                       "distance_pct": e.distance_pct, "distance_sigma": e.distance_sigma}
                      for e in sorted(st.exposures, key=lambda e: abs(e.distance_pct)
                                      if e.distance_pct is not None else math.inf)],
    }


def calibration_of(d: Daemon, account: str) -> dict | None:
    cal = None if d.sync is None else d.sync.calibration.get(account)
    return None if cal is None else cal.view()


def active_alerts(d: Daemon) -> list[dict]:
    """Firing levels and stale accounts, deepest first: what the rules hold as active right now."""
    m = d.monitor
    out = []
    for i, acc in enumerate(m.rules.accounts):
        st = m.rules.state[i]
        h = _num(float(m.engine.health[i]))
        for j in sorted(st.firing_since, reverse=True):
            out.append({"account": acc.name, "level": acc.levels[j].name, "since": iso_ms(st.firing_since[j]),
                        "health": h, "depth": j + 1})
        if st.stale:
            out.append({"account": acc.name, "level": "stale", "since": None, "health": h, "depth": 0})
    return sorted(out, key=lambda a: -a["depth"])


def action_row(done: Executed, health_after: float | None) -> dict:
    p, ex = done.plan, done.execution
    return {
        "at": iso_ms(p.ts_ms),
        "account": p.account,
        "level": p.level,
        "strategy": p.strategy,
        "health_before": _num(p.health_before),
        "expected_health": _num(p.expected_health),
        "health_after": None if health_after is None else _num(health_after),
        "ok": health_after is not None,
        "errors": list(ex.errors) + (["already executed"] if ex.duplicate else [])
        + ([f"refused: {ex.refused}"] if ex.refused else []),
        "legs": legs_text(**{k: v for k, v in execution_record_fills(ex).items() if k != "errors"}, digits=6),
    }
