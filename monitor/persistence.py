"""Warm start and snapshots: what the daemon knows about accounts outlives the process.

A snapshot holds an account's book (the paper ledger after fills, or the last
sync) and its rules state (cooldown, daily caps). On start, a snapshot whose
config digest matches the account's holdings in the config replaces them: the
config describes the account as it was set up, the snapshot as it is now. If the
user edited the holdings since, the config wins, with a log line saying so.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import orjson
import structlog

from monitor.config import AccountSettings
from monitor.core import Monitor
from monitor.execution.journaled import JournaledExecutor
from monitor.risk.portfolio import Exposure, to_native
from monitor.store.base import AccountSnapshot, Commit, StateStore, StoreUnavailable

log = structlog.get_logger("persistence")
RULES_FIELDS = ("last_action_ms", "day", "actions_today", "notional_today")
SNAPSHOT_CHUNK = 500
# Exposure fields older versions wrote that now live elsewhere: a borrow's maintenance rate is the
# book's borrow tiers (from the config or the venue), so an old snapshot's copy is dropped, not fatal.
LEGACY_EXPOSURE_FIELDS = ("borrow_mmr",)


def config_digest(acc: AccountSettings) -> str:
    described = acc.model_dump(include={"model", "holdings", "borrowed", "positions"}, mode="json")
    if acc.reserve:  # only then: digests of accounts without one stay what they were
        described["reserve"] = acc.reserve
    return hashlib.sha256(orjson.dumps(described, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def snapshot_of(m: Monitor, i: int, now_ms: int) -> AccountSnapshot:
    book = m.engine.books[i]
    health = float(m.engine.health[i])
    depth = int(m.rules.depth[i])
    levels = m.rules.accounts[i].levels
    st = m.rules.state[i]
    native = to_native(book.model, book.param, health) if math.isfinite(health) and health > 0 else None
    residual = {"num": book.residual_num, "den": book.residual_den} if book.residual_num or book.residual_den else {}
    return AccountSnapshot(
        book.name, now_ms, health if math.isfinite(health) else None,
        levels[depth - 1].name if depth else None,
        {a: asdict(e) for a, e in book.exposures.items() if not e.is_empty},
        config_digest(m.books_cfg[book.name]), {f: getattr(st, f) for f in RULES_FIELDS}, dict(book.reserve),
        native, residual)


def restore(m: Monitor, snaps: dict[str, AccountSnapshot]) -> int:
    """Applies matching snapshots to the monitor; returns how many accounts were restored."""
    restored = 0
    for name, snap in snaps.items():
        i = m.engine.account_index.get(name)
        if i is None:
            continue  # an account removed from the config
        if snap.config_digest != config_digest(m.books_cfg[name]):
            log.warning("holdings in the config changed since the last run: the config wins", account=name)
            continue
        book = m.engine.books[i]
        try:
            exposures = {a: Exposure(**{k: v for k, v in e.items() if k not in LEGACY_EXPOSURE_FIELDS})
                         for a, e in snap.book.items()}
        except (TypeError, ValueError) as err:  # written by another version: the config's book, said once
            log.error("snapshot unreadable, the config's book is used", account=name, error=str(err)[:200])
            continue
        reserve = snap.reserve if book.reserve else {}  # a venue's reserve comes back with the next sync
        if exposures != {a: e for a, e in book.exposures.items() if not e.is_empty} or reserve != book.reserve:
            m.engine.set_book(replace(book, exposures=exposures, reserve=reserve))
        st = m.rules.state[i]
        for f in RULES_FIELDS:
            if f in snap.rules:
                setattr(st, f, snap.rules[f])
        restored += 1
    return restored


async def reconcile_open_plans(store: StateStore, executor: JournaledExecutor) -> int:
    """Plans claimed but never closed: the process died mid-plan. Each is closed exactly once,
    by what the venue (or the journal) says happened; none is executed again."""
    open_plans = await store.open_plans()
    for record in open_plans:
        outcome = await executor.reconcile(record)
        log.warning("plan interrupted by a restart, reconciled", plan_id=record.plan_id, account=record.account,
                    outcome=outcome)
    return len(open_plans)


@dataclass(frozen=True, slots=True)
class AdoptSnapshots:
    """A control message for the engine task (the one owner of risk state): take these books."""
    snaps: dict[str, AccountSnapshot]
    restored: asyncio.Future[int] | None = None  # resolves, once applied, to how many accounts were restored

    def apply_to(self, d) -> list:
        try:
            n = restore(d.monitor, self.snaps)
        except Exception as err:  # whoever waits on it must never wait forever
            if self.restored is not None:
                self.restored.set_exception(err)
            raise
        if self.restored is not None:
            self.restored.set_result(n)
        return []


class SnapshotWriter:
    """Writes snapshots off the tick path: at once for accounts whose book changed, and all
    accounts every `every_s` (health and level for `collateral-monitor status`).

    With several instances only the leader writes (`writing()`); the others adopt the
    leader's snapshots every `every_s` through `adopt`, so their books follow the leader's
    fills and a new leader starts from them."""

    def __init__(self, monitor: Monitor, store: StateStore, clock_ms, every_s: float,
                 writing: Callable[[], bool] = lambda: True, adopt: Callable[[AdoptSnapshots], None] | None = None,
                 loaded: Callable[[], bool] = lambda: True):
        """Until `loaded()` (the state was read from the store), nothing is written or adopted: the
        books in memory then come from the config and must never overwrite the stored ones."""
        self.monitor = monitor
        self.store = store
        self.clock_ms = clock_ms
        self.every_s = every_s
        self.writing = writing
        self.loaded = loaded
        self.adopt = adopt
        self._dirty: set[int] = set()
        self._commits: deque[Commit] = deque()
        self._wake = asyncio.Event()

    def commit(self, c: Commit) -> None:
        """Called on the engine task, in the same step that changed the book `c` carries."""
        self._commits.append(c)
        self._wake.set()

    @property
    def commits_pending(self) -> int:
        return len(self._commits)

    async def _write_commits(self) -> None:
        while self._commits:
            await asyncio.shield(self.store.commit(self._commits[0]))  # a shutdown must not cut it short
            self._commits.popleft()

    async def follow_leader(self) -> None:
        if self.adopt is not None:
            self.adopt(AdoptSnapshots(await self.store.snapshots()))

    def follow(self, monitor: Monitor) -> None:
        """A config reload replaced the monitor (account indices may have moved): write every account anew."""
        self.monitor = monitor
        self._dirty = set(range(len(monitor.engine.books)))
        self._wake.set()

    def mark(self, account_index: int) -> None:
        self._dirty.add(account_index)
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.every_s)
                due = self._dirty
            except TimeoutError:
                due = set(range(len(self.monitor.engine.books)))
            self._wake.clear()
            if not self.loaded():
                continue  # what is dirty stays dirty: written once the state has loaded
            self._dirty = set()
            await self._write_commits()
            if self.writing():
                await self.write(due)
            else:
                try:
                    await self.follow_leader()
                except StoreUnavailable:
                    pass  # the next pass tries again

    async def write(self, indices) -> None:
        """In chunks, each read and written without a pause, with the engine's turn between them
        (a SQLite write does not yield by itself)."""
        indices = sorted(indices)
        for start in range(0, len(indices), SNAPSHOT_CHUNK):
            await self._write_commits()  # books read below may include what a commit journals
            now = self.clock_ms()
            m = self.monitor
            chunk = [snapshot_of(m, i, now) for i in indices[start:start + SNAPSHOT_CHUNK] if i < len(m.engine.books)]
            await self.store.put_snapshots(chunk)
            await asyncio.sleep(0)

    async def flush(self) -> None:
        """At shutdown. A store that refuses writes must not stop the shutdown: what was not saved is
        reconciled at the next start (an open claim), never guessed."""
        if not self.loaded():
            return
        try:
            await self._write_commits()
            if self.writing():
                await self.write(range(len(self.monitor.engine.books)))
        except Exception as err:
            log.error("state not saved at shutdown", error=f"{type(err).__name__}: {err}"[:200],
                      commits_unsaved=len(self._commits))
