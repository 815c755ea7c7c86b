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
- A write the server refuses for another reason (out of memory, a read-only replica), or
  a spill line that cannot be read back, never stops the flush: it goes to a dead-letter
  file beside the spill file (`*.dead.jsonl`), and is logged.
"""

from __future__ import annotations

import asyncio
import shutil
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
        self.set_aside = 0  # writes refused for good (not an outage), kept in the dead-letter file
        self._dead_path = spill_path.with_suffix(".dead.jsonl") if spill_path is not None else None
        if spill_path is not None and spill_path.exists():  # left by a run that ended in an outage
            self._spilled = sum(1 for _ in spill_path.open("rb"))
            if self._spilled:
                self._start_flusher()

    def __len__(self) -> int:
        return len(self._queue) + self._spilled

    async def submit(self, op: Op) -> None:
        if not self.outage and not len(self):
            try:
                await self._apply_or_set_aside(op)
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
            await self._apply_or_set_aside(op)  # raises on outage: the op stays at the head
            self._queue.popleft()

    async def _flush_spill(self) -> None:
        """Streams the spill file (memory stays bounded), then drops what was applied."""
        if not self._spilled or self._spill_path is None:
            return
        applied = 0  # bytes
        try:
            with self._spill_path.open("rb") as f:
                for line in f:
                    try:
                        op = _decode(line)
                    except ValueError:  # a line cut short by a crash mid-write
                        self._set_aside_raw(line, "unreadable spill line")
                    else:
                        await self._apply_or_set_aside(op)
                    applied += len(line)
        finally:
            self._drop_spilled(applied)

    def _drop_spilled(self, nbytes: int) -> None:
        """Removes the first `nbytes` of the spill file (writes spilled meanwhile were appended)."""
        path = self._spill_path
        rest = path.with_suffix(".rest")
        with path.open("rb") as src, rest.open("wb") as dst:
            src.seek(nbytes)
            shutil.copyfileobj(src, dst)
        rest.replace(path)
        with path.open("rb") as f:
            self._spilled = sum(1 for _ in f)
        if not self._spilled:
            path.unlink(missing_ok=True)

    async def _apply_or_set_aside(self, op: Op) -> None:
        try:
            await self._apply(op)
        except self._errors:
            raise
        except Exception as err:  # refused for good: retrying would block every later write
            self._set_aside_raw(_encode(op), f"{type(err).__name__}: {err}")

    def _set_aside_raw(self, line: bytes, why: str) -> None:
        self.set_aside += 1
        log.error("store write refused: set aside in the dead-letter file", reason=why[:200],
                  file=str(self._dead_path) if self._dead_path else None)
        if self._dead_path is not None:
            with self._dead_path.open("ab") as f:
                f.write(line if line.endswith(b"\n") else line + b"\n")

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
