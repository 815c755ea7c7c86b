"""Notifiers: where alerts go. The console notifier is the embedded default."""

from __future__ import annotations

import math
import sys
from typing import Protocol, TextIO

from monitor.model import LevelEvent, iso_ms


class Notifier(Protocol):
    name: str

    async def send(self, event: LevelEvent) -> None:
        """Delivers one alert; raises on failure (the manager retries)."""


def render_text(ev: LevelEvent) -> str:
    """One readable line per alert: account, level, state, health, the native figure, time."""
    dry = " [dry-run]" if ev.dry_run else ""
    health = "unknown" if math.isnan(ev.health) else f"{ev.health:.4f}"
    native = "" if math.isnan(ev.native) or ev.native == ev.health else f" (native {ev.native:.4f})"
    text = f"{ev.kind.value.upper()}{dry} {ev.account}/{ev.level}: health {health}{native} at {iso_ms(ev.ts_ms)}"
    if ev.min_health is not None and ev.since_ms is not None:
        text += f"; lowest {ev.min_health:.4f}, breached for {(ev.ts_ms - ev.since_ms) / 1000:.0f}s"
    if ev.detail:
        text += f"; {ev.detail}"
    return text


class ConsoleNotifier:
    def __init__(self, name: str = "console", stream: TextIO | None = None):
        self.name = name
        self._stream = stream

    async def send(self, event: LevelEvent) -> None:
        stream = self._stream or sys.stdout
        stream.write(render_text(event) + "\n")
        stream.flush()
