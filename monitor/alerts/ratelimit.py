"""Per-channel rate limits: sliding windows of (at most `count` messages per `per_s`).

Defaults match what the services enforce: Telegram about one message a second per
chat and 20 a minute per group chat (negative chat ids); Slack's incoming webhooks
one a second per webhook, with short bursts tolerated.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

Window = tuple[int, float]  # (count, per_s)


def default_windows(kind: str, chat_id: str | None = None) -> list[Window]:
    if kind == "telegram":
        return [(1, 1.0)] + ([(20, 60.0)] if chat_id and chat_id.startswith("-") else [])
    if kind == "slack":
        return [(1, 1.0)]
    return []


def windows_for(kind: str, chat_id: str | None, min_interval_s: float | None,
                max_per_minute: int | None) -> list[Window]:
    windows = default_windows(kind, chat_id)
    if min_interval_s is not None:
        windows = [w for w in windows if w[0] != 1] + ([(1, min_interval_s)] if min_interval_s > 0 else [])
    if max_per_minute is not None:
        windows = [w for w in windows if w[1] != 60.0] + [(max_per_minute, 60.0)]
    return windows


class RateLimiter:
    def __init__(self, windows: list[Window], clock: Callable[[], float] = time.monotonic):
        self.windows = windows
        self._clock = clock
        self._sent: deque[float] = deque(maxlen=max((c for c, _ in windows), default=1))

    def wait_s(self) -> float:
        """How long until one more message is allowed (0: now)."""
        now, wait = self._clock(), 0.0
        for count, per_s in self.windows:
            if len(self._sent) >= count:
                wait = max(wait, self._sent[-count] + per_s - now)
        return wait

    def record(self) -> None:
        self._sent.append(self._clock())

    async def acquire(self) -> None:
        while (wait := self.wait_s()) > 0:
            await asyncio.sleep(wait)
        self.record()
