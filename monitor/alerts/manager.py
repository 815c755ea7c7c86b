"""Alert manager: routes level events to notifiers, off the tick path.

Events arrive on a bounded queue from the engine task; a slow notifier never
delays risk. A firing alert is sent once per (account, level) until it resolves;
a failing notifier is retried with backoff for about a minute, then the failure is
logged (a durable outbox that survives restarts belongs to the state store).
"""

from __future__ import annotations

import asyncio

import structlog

from monitor.alerts.notifiers import Notifier
from monitor.model import EventKind, LevelEvent

log = structlog.get_logger("alerts")
RETRY_DELAYS_S = (0.5, 1, 2, 5, 10, 30)


class AlertManager:
    def __init__(self, notifiers: list[tuple[Notifier, frozenset[str] | None]], queue_size: int = 10_000):
        self._notifiers = notifiers  # (notifier, the levels routed to it; None = all)
        self.queue: asyncio.Queue[LevelEvent] = asyncio.Queue(queue_size)
        self._firing: set[tuple[str, str]] = set()
        self.sent = 0
        self.dropped = 0

    def set_notifiers(self, notifiers: list[tuple[Notifier, frozenset[str] | None]]) -> None:
        """New channels or routing (a config reload); what is firing stays firing."""
        self._notifiers = notifiers

    def submit(self, event: LevelEvent) -> None:
        """Called from the tick path: never blocks."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("alert queue full, event dropped", account=event.account, alert_level=event.level)

    def should_send(self, ev: LevelEvent) -> bool:
        """Dedup: a firing (account, level) is announced once, and resolves only if it fired."""
        key = (ev.account, ev.level)
        if ev.kind == EventKind.FIRING:
            if key in self._firing:
                return False
            self._firing.add(key)
        elif ev.kind == EventKind.RESOLVED:
            if key not in self._firing:
                return False
            self._firing.discard(key)
        return True

    async def run(self) -> None:
        while True:
            event = await self.queue.get()
            if self.should_send(event):
                await asyncio.gather(*(self._deliver(n, event) for n, levels in self._notifiers
                                       if levels is None or event.level in levels or event.level == "stale"))
            self.queue.task_done()

    async def _deliver(self, notifier: Notifier, event: LevelEvent) -> None:
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
            try:
                await notifier.send(event)
                self.sent += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a notifier's failure must not kill alerting
                if delay is None:
                    log.error("alert not delivered", notifier=notifier.name, account=event.account,
                              error=type(err).__name__, attempts=attempt + 1)
                    return
                log.warning("alert delivery failed, retrying", notifier=notifier.name, error=type(err).__name__,
                            retry_in_s=delay)
                await asyncio.sleep(delay)
