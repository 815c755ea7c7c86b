"""The PriceFeed interface: anything that produces PriceTicks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from monitor.model import PriceTick

TickSink = Callable[[PriceTick], None]


class PriceFeed(Protocol):
    """A feed pushes ticks into `sink` (non-blocking) until cancelled.

    `run` returns only when the feed has nothing more to say (a finite source);
    a live feed runs until its task is cancelled. Errors propagate to the supervisor,
    which restarts the feed with backoff.
    """

    name: str
    symbols: tuple[str, ...]

    async def run(self, sink: TickSink) -> None: ...


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """A live feed's connection changed state: the engine hears of it (and logs it)."""

    feed: str
    kind: str  # "disconnected" | "connected" | "watchdog"
    detail: str = ""


FeedEventSink = Callable[[FeedEvent], None]
