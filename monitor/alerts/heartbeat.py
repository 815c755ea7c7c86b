"""Dead-man's switch: a periodic request to an external check URL while the daemon is healthy.

No in-process alert can report the daemon's own death; services such as
healthchecks.io or Dead Man's Snitch alert when these requests stop coming.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from monitor.alerts.http import HttpPoster
from monitor.alerts.notifiers import DeliveryError

log = structlog.get_logger("alerts")


class Heartbeat:
    def __init__(self, url: str, every_s: float, healthy: Callable[[], bool], timeout_s: float = 10.0):
        self._url = url
        self.every_s = every_s
        self._healthy = healthy
        self._http = HttpPoster(timeout_s)
        self.beats = 0
        self.failures = 0

    async def beat(self) -> bool:
        """One ping, only while healthy: a hung engine must stop the pings."""
        if not self._healthy():
            log.warning("heartbeat withheld: the daemon is not healthy")
            return False
        try:
            reply = await self._http.get(self._url)
        except DeliveryError as err:
            reply, reason = None, err.reason
        if reply is not None and 200 <= reply.status < 300:
            self.beats += 1
            return True
        self.failures += 1
        log.warning("heartbeat failed", reason=reason if reply is None else f"HTTP {reply.status}")
        return False

    async def run(self) -> None:
        try:
            while True:
                await self.beat()
                await asyncio.sleep(self.every_s)
        finally:
            await self._http.close()
