"""Routing by severity: which channels hear about which levels."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.alerts.content import Alert
from monitor.alerts.policy import STALE


@dataclass(frozen=True, slots=True)
class Route:
    channel: str
    levels: frozenset[str] | None = None  # None: every level

    def accepts(self, alert: Alert) -> bool:
        # Being blind (stale prices) concerns every level, so every channel hears of it.
        return self.levels is None or alert.level in self.levels or alert.level == STALE


def channels_for(routes: list[Route], alert: Alert) -> list[str]:
    return [r.channel for r in routes if r.accepts(alert)]
