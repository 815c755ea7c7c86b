"""Writes that outlive an outage of the store's server, applied in order when it returns.

Policy (documented in the README):
- While the server answers and nothing is queued, a write is applied at once.
- Otherwise it is queued in memory, in order. Last-write-wins state (snapshots,
  alerts, silences, the kill switch) is coalesced: a newer write to the same key
  replaces the queued one, so such state never grows the queue beyond its keys.
- The in-memory queue is bounded (`buffer_max`). Past it, further writes go, in
  order, to a spill file of JSON lines in the state directory, which is flushed
  after the in-memory queue: nothing is dropped, the order is kept, memory stays
  bounded. Without a spill file, the oldest queued write is dropped and counted.
- A flusher retries with backoff; the outage and the recovery are each reported
  once through `on_outage(down, detail)`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("store")
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(slots=True)
class Op:
    """One write, as data: it can wait in memory or in the spill file."""
    name: str
    args: tuple[Any, ...]
    coalesce: str | None = None  # last write wins for this key


class WriteBuffer:
    def __init__(self, apply: Callable[[Op], Awaitable[None]], outage_errors: tuple[type[BaseException], ...],
                 buffer_max: int = 100_000, spill_path: Path | None = None,
                 on_outage: Callable[[bool, str], None] | None = None,
                 probe: Callable[[], Awaitable[object]] | None = None):
        """`probe()` must succeed before an outage noticed by a read (nothing queued) counts as over."""
        self._apply = apply
        self._probe = probe
        self._errors = outage_errors
        self._max = buffer_max
        self._spill_path = spill_path
        self._on_outage = on_outage
        self._queue: deque[Op] = deque()
        self._by_key: dict[str, Op] = {}
        self._spilled = 0
        self.dropped = 0
        self.outage = False
        self._flusher: asyncio.Task | None = None
        if spill_path is not None and spill_path.exists():  # left by a run that ended in an outage
            self._spilled = sum(1 for _ in spill_path.open("rb"))
            if self._spilled:
                self._start_flusher()

    def __len__(self) -> int:
        return len(self._queue) + self._spilled

    async def submit(self, op: Op) -> None:
        if not self.outage and not len(self):
            try:
                await self._apply(op)
                return
            except self._errors as err:
                self.note_outage(err)
        self._enqueue(op)
        self._start_flusher()

    def note_outage(self, err: BaseException) -> None:
        if not self.outage:
            self.outage = True
            log.error("state store unavailable: buffering writes", error=type(err).__name__)
            if self._on_outage is not None:
                self._on_outage(True, type(err).__name__)
        self._start_flusher()

    def _enqueue(self, op: Op) -> None:
        if op.coalesce is not None and (queued := self._by_key.get(op.coalesce)) is not None:
            queued.name, queued.args = op.name, op.args
            return
        if self._spilled or len(self._queue) >= self._max:
            self._spill(op)
            return
        self._queue.append(op)
        if op.coalesce is not None:
            self._by_key[op.coalesce] = op

    def _spill(self, op: Op) -> None:
        if self._spill_path is None:
            self._queue.append(op)
            oldest = self._queue.popleft()
            self._forget(oldest)
            self.dropped += 1
            if self.dropped == 1:
                log.error("store write buffer full: dropping the oldest buffered writes", buffer_max=self._max)
            return
        with self._spill_path.open("ab") as f:
            f.write(_encode(op))
        self._spilled += 1

    def _forget(self, op: Op) -> None:
        if op.coalesce is not None and self._by_key.get(op.coalesce) is op:
            del self._by_key[op.coalesce]

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            try:
                self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="store-flush")
            except RuntimeError:  # no loop yet (constructed outside one): the first write starts it
                self._flusher = None

    async def _flush(self) -> None:
        attempt = 0
        while True:
            try:
                if not len(self) and self.outage and self._probe is not None:
                    await self._probe()
                await self._flush_memory()
                await self._flush_spill()
                if not len(self):
                    break
            except self._errors as err:
                self.note_outage(err)
                await asyncio.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)])
                attempt += 1
        if self.outage:
            self.outage = False
            log.info("state store back: buffered writes flushed", dropped=self.dropped)
            if self._on_outage is not None:
                self._on_outage(False, f"flushed, {self.dropped} dropped" if self.dropped else "flushed")

    async def _flush_memory(self) -> None:
        while self._queue:
            op = self._queue[0]
            self._forget(op)  # a newer write to its key must queue anew, not change it mid-apply
            await self._apply(op)  # raises on outage: the op stays at the head
            self._queue.popleft()

    async def _flush_spill(self) -> None:
        if not self._spilled or self._spill_path is None:
            return
        lines = self._spill_path.read_bytes().splitlines()
        applied = 0
        try:
            for line in lines:
                await self._apply(_decode(line))
                applied += 1
        finally:  # writes spilled meanwhile were appended: drop only what was applied
            rest = self._spill_path.read_bytes().splitlines()[applied:]
            self._spill_path.write_bytes(b"".join(line + b"\n" for line in rest))
            self._spilled = len(rest)
            if not rest:
                self._spill_path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Gives the flusher a moment to finish; what is left stays in the spill file if there is one."""
        if self._flusher is not None and not self._flusher.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), 2.0)
            except TimeoutError:
                self._flusher.cancel()
        if self._spill_path is not None and self._queue:  # older than anything already spilled: first
            spilled = self._spill_path.read_bytes() if self._spill_path.exists() else b""
            self._spill_path.write_bytes(b"".join(_encode(op) for op in self._queue) + spilled)
            self._spilled += len(self._queue)
            self._queue.clear()
            self._by_key.clear()


def _encode(op: Op) -> bytes:
    return orjson.dumps([op.name, list(op.args)], default=_bytes_to_str) + b"\n"


def _decode(line: bytes) -> Op:
    name, args = orjson.loads(line)
    return Op(name, tuple(_str_to_bytes(a) for a in args))


def _bytes_to_str(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__b": value.decode()}
    raise TypeError


def _str_to_bytes(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__b"}:
            return value["__b"].encode()
        return {k: _str_to_bytes(v) for k, v in value.items()}
    return value
