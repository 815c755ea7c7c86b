"""Alert text: one set of facts, formatted per channel with that channel's escaping.

`facts()` is the single source of what an alert says; the console, Slack mrkdwn
and Telegram HTML differ only in markup and escaping. Digests show the first
alerts in full and the rest one line each, within the channel's size limit.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from monitor.alerts.content import NATIVE_NAME, PERCENT_NATIVE, Alert
from monitor.alerts.message import Message
from monitor.model import EventKind, iso_ms

DETAILED = 5  # alerts of a digest shown in full
TITLE_MARK = {EventKind.FIRING: "🔴", EventKind.RESOLVED: "✅", EventKind.STALE: "⚠️", EventKind.FRESH: "✅",
              EventKind.INEFFECTIVE: "⚠️", EventKind.CAPPED: "⚠️", EventKind.VERIFY_FAILED: "⚠️"}


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "unknown" if x is None or math.isnan(x) else ("inf" if math.isinf(x) else format(x, fmt))


def _price(x: float) -> str:
    return f"{x:,.2f}" if x >= 100 else f"{x:.6g}"


def _duration(ms: int) -> str:
    s = max(0, ms // 1000)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {sec:02d}s" if m else f"{sec}s")


def native_text(alert: Alert) -> str:
    model = alert.context.model
    if not model or model == "health_factor" or math.isnan(alert.native):
        return ""
    value = f"{alert.native * 100:.2f}%" if model in PERCENT_NATIVE else f"{alert.native:.4f}"
    return f" ({NATIVE_NAME[model]} {value})"


def title(alert: Alert) -> str:
    dry = " [dry-run]" if alert.dry_run else ""
    what = alert.kind.value.upper() if alert.level in ("stale",) else f"{alert.kind.value.upper()} {alert.level}"
    again = f" (reminder {alert.repeat})" if alert.repeat else ""
    return f"{TITLE_MARK.get(alert.kind, '')} {what}{again}{dry}: {alert.account}".strip()


def facts(alert: Alert) -> list[tuple[str, str]]:
    """(label, value) pairs in plain text: account state, liquidation, action, prices, time."""
    out = [("health", _num(alert.health) + native_text(alert))]
    if alert.kind in (EventKind.RESOLVED, EventKind.FRESH) and alert.since_ms is not None:
        low = f"lowest {_num(alert.min_health)}, " if alert.min_health is not None else ""
        out.append(("was", f"{low}for {_duration(alert.ts_ms - alert.since_ms)}"))
    for e in alert.context.exposures:
        sigma = f", {e.distance_sigma:.1f}σ daily" if e.distance_sigma is not None else ""
        dist = f" ({e.distance_pct:+.1f}%{sigma})" if e.distance_pct is not None else ""
        out.append(("liquidation", f"{e.asset} at {_price(e.liquidation_price)}{dist}, now {_price(e.price)}"))
    if alert.context.action:
        out.append(("action", alert.context.action))
    if alert.detail:
        out.append(("detail", alert.detail))
    if alert.context.price_source:
        age = "" if alert.context.price_age_s is None else f", {alert.context.price_age_s:.0f}s old"
        out.append(("prices", alert.context.price_source + age))
    out.append(("at", iso_ms(alert.ts_ms) or ""))
    return out


def summary(message: Message) -> str:
    counts = Counter(f"{a.level} {a.kind.value}" for a in message.alerts)
    parts = [f"{n} {what}" for what, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return f"{len(message.alerts)} alerts: " + ", ".join(parts)


def one_line(alert: Alert) -> str:
    return f"{alert.account} {alert.level} {alert.kind.value} health {_num(alert.health)}"


@dataclass(frozen=True, slots=True)
class Markup:
    """How a channel writes bold text, a fact line, and escapes a dynamic value."""
    escape: Callable[[str], str]
    bold: Callable[[str], str]
    limit: int  # characters per message


PLAIN = Markup(lambda s: s, lambda s: s, 1_000_000)
# 4,096 is Telegram's limit in UTF-16 units after parsing; an emoji counts twice there, once here.
TELEGRAM_HTML = Markup(lambda s: html.escape(s, quote=False), lambda s: f"<b>{s}</b>", 4000)
# Slack mrkdwn: only &, < and > need escaping (https://api.slack.com/reference/surfaces/formatting).
SLACK = Markup(lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
               lambda s: f"*{s}*", 3000)


def alert_block(alert: Alert, mk: Markup, sep: str = "\n") -> str:
    lines = [mk.bold(mk.escape(title(alert)))]
    lines += [f"{label}: {mk.escape(value)}" for label, value in facts(alert)]
    return sep.join(lines)


def render(message: Message, mk: Markup, sep: str = "\n") -> str:
    """The whole message as one text, cut to the channel's limit with a count of what was left out."""
    parts = [mk.bold(mk.escape("TEST")) + " " + mk.escape(n.text) if message.test else mk.escape(n.text)
             for n in message.notices]
    alerts = message.alerts
    if len(alerts) > 1:
        parts.append(mk.bold(mk.escape(summary(message))))
    parts += [alert_block(a, mk, sep) for a in alerts[:DETAILED]]
    parts += [mk.escape(one_line(a)) for a in alerts[DETAILED:]]
    return fit(parts, mk, sep)


def fit(parts: list[str], mk: Markup, sep: str) -> str:
    """Joins parts until the limit; what does not fit is counted, never silently cut mid-tag."""
    out, used = [], 0
    for n, part in enumerate(parts):
        more = mk.escape(f"… and {len(parts) - n} more")
        if used + len(part) + len(sep) * 2 + len(more) + 16 > mk.limit:
            out.append(more)
            break
        out.append(part)
        used += len(part) + len(sep) * 2
    return (sep * 2).join(out)
