"""The daemon's optional alerting components: the heartbeat and Telegram control."""

from __future__ import annotations

import math

from monitor.alerts.control import TelegramControl
from monitor.alerts.heartbeat import Heartbeat
from monitor.alerts.telegram import TelegramNotifier
from monitor.daemon import Daemon, healthy, level_order, status_line
from monitor.secrets import Secrets
from monitor.supervisor import Component

STATUS_ACCOUNTS = 15  # accounts listed by /status, worst first


def heartbeat_component(d: Daemon) -> list[Component]:
    a = d.settings.alerts
    if a.heartbeat_url_env is None:
        return []
    url = Secrets(a.secrets_file).get(a.heartbeat_url_env, "alerts.heartbeat_url_env")
    beat = Heartbeat(url, a.heartbeat_every_s, lambda: healthy(d, max(a.heartbeat_every_s, 5.0)))
    return [Component("heartbeat", beat.run)]


def control_components(d: Daemon) -> list[Component]:
    secrets = Secrets(d.settings.alerts.secrets_file)
    out = []
    for ns in d.settings.notifiers:
        if not ns.control:
            continue
        worker = d.alerts.workers.get(ns.name)
        if worker is None or not isinstance(worker.notifier, TelegramNotifier):
            continue
        token = secrets.get(ns.token_env, f"notifiers ({ns.name}).token_env")
        control = TelegramControl(worker.notifier, ns.api_base, token, ns.allowed_chat_ids, d.store,
                                  lambda: status_text(d), lambda: level_order(d.monitor), d.alerts.add_silence, d.clock_ms)
        out.append(Component(f"control:{ns.name}", control.run))
    return out


def status_text(d: Daemon) -> str:
    """/status: accounts worst first, with health and level, then the alerts firing."""
    m = d.monitor
    health = m.engine.health.tolist()
    order = sorted(range(len(health)), key=lambda i: math.inf if math.isnan(health[i]) else health[i])
    lines = [status_line(d)]
    for i in order[:STATUS_ACCOUNTS]:
        st = m.status(i)
        h = "unknown" if math.isnan(st.health) else f"{st.health:.4f}"
        lines.append(f"{st.name}: health {h}" + (f", at {st.level}" if st.level else "")
                     + (", STALE" if st.stale else ""))
    if len(order) > STATUS_ACCOUNTS:
        lines.append(f"… and {len(order) - STATUS_ACCOUNTS} more accounts")
    firing = d.alerts.policy.firing()
    lines.append(f"{len(firing)} alert(s) firing" + (": " + ", ".join(
        f"{a.alert.account}/{a.alert.level}" for a in firing[:20]) if firing else ""))
    return "\n".join(lines)
