"""Supervised components: a crash is logged and the component restarted with
backoff; a crash loop (too many restarts within a window) stops the daemon."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("supervisor")


class CrashLoop(Exception):
    """A component kept crashing: the daemon must stop with a non-zero exit."""


@dataclass
class Component:
    name: str
    start: Callable[[], Awaitable[None]]
    crashes: deque[float] = field(default_factory=deque)


class Supervisor:
    def __init__(self, max_restarts: int = 5, window_s: float = 60.0, base_backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock

    async def supervise(self, comp: Component) -> None:
        """Runs one component until it returns; raises CrashLoop when it keeps failing."""
        while True:
            try:
                await comp.start()
                log.info("component finished", component=comp.name)
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                now = self._clock()
                comp.crashes.append(now)
                while comp.crashes and now - comp.crashes[0] > self.window_s:
                    comp.crashes.popleft()
                log.error("component crashed", component=comp.name, error=f"{type(err).__name__}: {err}",
                          crashes_in_window=len(comp.crashes), exc_info=err)
                if len(comp.crashes) > self.max_restarts:
                    raise CrashLoop(f"{comp.name} crashed {len(comp.crashes)} times within {self.window_s:.0f}s") from err
                delay = min(self.base_backoff_s * 2 ** (len(comp.crashes) - 1), self.max_backoff_s)
                await asyncio.sleep(delay)
