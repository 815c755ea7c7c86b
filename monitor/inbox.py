"""The engine's inbox: price ticks coalesced to the newest per symbol, plus control messages.

Feeds never block and memory never grows with load: when the engine falls
behind, a newer tick for a symbol replaces the waiting one (latest value wins).
Control messages (fills, resyncs, clock ticks) are never coalesced and go first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from monitor.model import PriceTick


class EngineInbox:
    def __init__(self) -> None:
        self._ticks: dict[str, PriceTick] = {}
        self._control: deque[Any] = deque()
        self._ready = asyncio.Event()
        self.received = 0
        self.coalesced = 0  # ticks replaced by a newer one before the engine saw them

    def put_tick(self, tick: PriceTick) -> None:
        self.received += 1
        if tick.symbol in self._ticks:
            self.coalesced += 1
            del self._ticks[tick.symbol]  # re-insert: the symbol waits behind those already waiting
        self._ticks[tick.symbol] = tick
        self._ready.set()

    def put_control(self, message: Any) -> None:
        self._control.append(message)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._ticks) + len(self._control)

    async def get(self) -> Any:
        while not self._control and not self._ticks:
            self._ready.clear()
            await self._ready.wait()
        if self._control:
            return self._control.popleft()
        symbol = next(iter(self._ticks))
        return self._ticks.pop(symbol)
