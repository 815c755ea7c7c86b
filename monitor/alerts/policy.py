"""Which alerts are notified, and when: Alertmanager's semantics in event time.

- dedup: one notification per (account, level) while it fires;
- repeat: a firing alert is notified again every repeat interval of its level;
- resolved: a notice when a notified alert clears, with how low and how long;
- inhibition: a deeper level of the same account, or the account's stale ("blind")
  alert, holds back the milder ratio alerts; they go out if still firing when it ends;
- silences: mute notifications (never actions) until they expire; a silenced alert still
  firing when its silence ends is notified then.

Pure and synchronous: the manager feeds it alerts and the time, and persists what
`records` reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from monitor.alerts.content import Alert
from monitor.model import EventKind
from monitor.store.base import AlertRecord, Silence

log = structlog.get_logger("alerts")


STALE = "stale"
FIRES = (EventKind.FIRING, EventKind.STALE)
CLEARS = (EventKind.RESOLVED, EventKind.FRESH)


@dataclass(slots=True)
class Active:
    alert: Alert  # as it first fired (its key stays the same across repeats and restarts)
    last_sent_ms: int | None = None  # None: not notified yet (inhibited or silenced so far)
    repeats: int = 0
    worst_health: float | None = None
    _alert_dict: dict | None = None  # the alert as saved: it never changes, so it is serialised once

    def record(self) -> AlertRecord:
        if self._alert_dict is None:
            self._alert_dict = self.alert.to_dict()
        return AlertRecord(self.alert.account, self.alert.level, self.alert.ts_ms, self.last_sent_ms,
                           self.worst_health, {"alert": self._alert_dict, "repeats": self.repeats})

    @classmethod
    def from_record(cls, r: AlertRecord) -> Active:
        return cls(Alert.from_dict(r.data["alert"]), r.last_sent_ms, int(r.data.get("repeats", 0)), r.worst_health)


@dataclass(frozen=True, slots=True)
class Changes:
    """What one step decided: alerts to notify, active alerts to save (their `record()`, made by the
    writer: serialising is the costly part of a burst) and records to delete."""
    notify: tuple[Alert, ...] = ()
    put: tuple[Active, ...] = ()
    delete: tuple[tuple[str, str], ...] = ()


class AlertPolicy:
    def __init__(self, repeat_ms: Callable[[str], int], rank: Callable[[str, str], int]):
        """`repeat_ms(level)`: the repeat interval; `rank(account, level)`: deeper levels rank higher."""
        self._repeat_ms = repeat_ms
        self._rank = rank
        self.active: dict[str, dict[str, Active]] = {}  # account -> level -> its firing alert
        self.silences: list[Silence] = []

    def retune(self, other: AlertPolicy) -> None:
        """A config reload: the new repeats and level order; what fires keeps firing."""
        self._repeat_ms, self._rank = other._repeat_ms, other._rank

    def load(self, records: list[AlertRecord]) -> None:
        for r in records:
            try:
                active = Active.from_record(r)
            except (KeyError, TypeError, ValueError) as err:  # written by another version: never a crash loop
                log.error("active alert unreadable, skipped", account=r.account, alert_level=r.level,
                          error=f"{type(err).__name__}: {err}")
                continue
            self.active.setdefault(r.account, {})[r.level] = active

    def adopt(self, records: list[AlertRecord]) -> None:
        """Another instance notified until now: what it stored is the truth (its alerts keep their
        ids). What fires here but was never stored was decided here and sent by nobody: news."""
        mine, self.active = self.active, {}
        self.load(records)
        for account, levels in mine.items():
            for level, a in levels.items():
                if level not in self.active.get(account, {}):
                    a.last_sent_ms = None
                    self.active.setdefault(account, {})[level] = a

    def firing(self) -> list[Active]:
        return [a for levels in self.active.values() for a in levels.values()]

    # -- decisions --------------------------------------------------------------------------
    def step(self, alerts: list[Alert], now_ms: int) -> Changes:
        """Alerts that arrived together (one tick's): all are registered before any is notified,
        so a warn and a critical firing at once notify only the critical."""
        notify: list[Alert] = []
        put: list[Active] = []
        delete: list[tuple[str, str]] = []
        for c in [*(self.on_alert(a, now_ms) for a in alerts), self.due(now_ms, only={a.account for a in alerts})]:
            notify += c.notify
            put += c.put
            delete += c.delete
        return Changes(tuple(notify), tuple(put), tuple(delete))

    def on_alert(self, alert: Alert, now_ms: int) -> Changes:
        """Registers one alert; firing ones are notified by the `due()` that follows (see `step`)."""
        key = (alert.account, alert.level)
        if alert.kind in FIRES:
            levels = self.active.setdefault(alert.account, {})
            a = levels.get(alert.level)
            if a is not None:  # dedup: already firing (also across a restart)
                a.worst_health = _lower(a.worst_health, alert.health)
                return Changes(put=(a,))
            a = levels[alert.level] = Active(alert, worst_health=_lower(None, alert.health))
            return Changes(put=(a,))
        if alert.kind in CLEARS:
            levels = self.active.get(alert.account, {})
            a = levels.pop(alert.level, None)
            if not levels:
                self.active.pop(alert.account, None)
            if a is None:
                return Changes()
            # The record holds the whole history, from before any restart: the rules only know this process's part.
            alert = replace(alert, since_ms=a.alert.ts_ms, min_health=_lower(a.worst_health, _nan_if_none(alert.min_health)))
            notify = () if a.last_sent_ms is None or self.silenced(alert, now_ms) else (alert,)
            return Changes(notify, delete=(key,))  # milder alerts held back by it: the next due()
        return Changes(() if self.silenced(alert, now_ms) else (alert,))  # one-off notices

    def due(self, now_ms: int, only: set[str] | None = None) -> Changes:
        """Firing alerts to notify now: never notified and no longer held back, or a repeat due."""
        notify, put = [], []
        accounts = self.active.items() if only is None else [(acc, self.active.get(acc, {})) for acc in only]
        for account, level, a in ((acc, lv, a) for acc, levels in accounts for lv, a in levels.items()):
            if a.last_sent_ms is not None and now_ms - a.last_sent_ms < self._repeat_ms(level):
                continue
            if self.inhibited(account, level) or self.silenced(a.alert, now_ms):
                continue
            if a.last_sent_ms is None:
                notify.append(a.alert)
            else:
                a.repeats += 1
                notify.append(a.alert.again(now_ms, a.repeats))
            a.last_sent_ms = now_ms
            put.append(a)
        return Changes(tuple(notify), tuple(put))

    def inhibited(self, account: str, level: str) -> bool:
        if level == STALE:
            return False
        levels = self.active.get(account, {})
        if STALE in levels:
            return True  # blind: ratios computed from stale prices are not news
        rank = self._rank(account, level)
        return any(self._rank(account, lv) > rank for lv in levels)

    def silenced(self, alert: Alert, now_ms: int) -> bool:
        return any(s.matches(alert.account, alert.level, now_ms) for s in self.silences)


def _nan_if_none(h: float | None) -> float:
    return math.nan if h is None else h


def _lower(worst: float | None, h: float) -> float | None:
    if h != h:  # NaN: unknown health says nothing about the worst
        return worst
    return h if worst is None else min(worst, h)
