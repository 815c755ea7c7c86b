"""The embedded default store: one SQLite file in the state directory.

WAL mode and a commit per write: a kill at any instant loses at most the write
in flight, never a committed one, and never corrupts the file. Calls are made
inline: each is a local write of well under a millisecond (no fsync per commit
with synchronous=NORMAL in WAL mode, which is still safe against a process kill).
Several processes may share the file: the lease uses BEGIN IMMEDIATE to serialise.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from monitor.model import wall_clock_ms
from monitor.store.base import (
    AccountSnapshot,
    AlertRecord,
    Commit,
    KillSwitch,
    Lease,
    OutboxItem,
    PlanRecord,
    Silence,
    dump,
    load,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY, account TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'claimed', detail BLOB NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, account TEXT NOT NULL,
    ts_ms INTEGER NOT NULL DEFAULT 0, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS journal_ts ON journal (ts_ms);
CREATE TABLE IF NOT EXISTS kv (space TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (space, key));
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, key TEXT NOT NULL,
    item BLOB NOT NULL, done INTEGER NOT NULL DEFAULT 0, UNIQUE (channel, key));
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox (channel, done, seq);
CREATE TABLE IF NOT EXISTS commits (id TEXT PRIMARY KEY, ts_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL);
"""
# Stores made by earlier versions lack columns added since.
_MIGRATIONS = (
    ("plans", "state", "ALTER TABLE plans ADD COLUMN state TEXT NOT NULL DEFAULT 'done'"),
    ("plans", "detail", "ALTER TABLE plans ADD COLUMN detail BLOB NOT NULL DEFAULT '{}'"),
    ("journal", "ts_ms", "ALTER TABLE journal ADD COLUMN ts_ms INTEGER NOT NULL DEFAULT 0"),
)
_SNAPSHOT, _ALERT, _SILENCE, _CONTROL = "snapshot", "alert", "silence", "control"
_DELIVERED_KEEP = 10_000  # delivered outbox keys kept per channel, so a late duplicate add is refused
_TRIM_EVERY = 1_000
_COMMIT_IDS_KEEP_MS = 7 * 86_400_000  # a retried commit arrives within seconds; a week is ample


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: str | Path, clock_ms: Callable[[], int] = wall_clock_ms):
        """`path` ":memory:" gives a store that forgets on exit (replay, tests)."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._clock_ms = clock_ms
        self._done_since_trim = 0
        self._commits_since_trim = 0
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        for table, column, ddl in _MIGRATIONS:
            if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(ddl)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- key/value spaces (snapshots, alerts, silences, control) ---------------------------
    def _put(self, space: str, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (space, key, value))

    def _delete(self, space: str, key: str) -> bool:
        return self._db.execute("DELETE FROM kv WHERE space = ? AND key = ?", (space, key)).rowcount > 0

    def _values(self, space: str) -> list[bytes]:
        return [v for (v,) in self._db.execute("SELECT value FROM kv WHERE space = ? ORDER BY key", (space,))]

    # -- transitions ------------------------------------------------------------------------
    async def commit(self, c: Commit) -> list[bool]:
        now = self._clock_ms()
        with self._transaction() as db:
            if db.execute("INSERT OR IGNORE INTO commits VALUES (?, ?)", (c.id, now)).rowcount == 0:
                return [False] * len(c.outbox)  # applied before
            self._commits_since_trim += 1
            if self._commits_since_trim >= _TRIM_EVERY:
                self._commits_since_trim = 0
                db.execute("DELETE FROM commits WHERE ts_ms < ?", (now - _COMMIT_IDS_KEEP_MS,))
            db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                           [(_ALERT, f"{a.account}\x1f{a.level}", dump(a)) for a in c.alerts]
                           + [(_SNAPSHOT, s.account, dump(s)) for s in c.snapshots])
            db.executemany("DELETE FROM kv WHERE space = ? AND key = ?",
                           [(_ALERT, f"{account}\x1f{level}") for account, level in c.alerts_deleted])
            db.executemany("INSERT INTO journal (kind, account, ts_ms, record) VALUES (?, ?, ?, ?)",
                           [(j.kind, j.account, j.ts_ms, orjson.dumps(j.record)) for j in c.journal])
            db.executemany("UPDATE plans SET state = ?, detail = ? WHERE plan_id = ?",
                           [(state, orjson.dumps(detail), plan_id) for plan_id, state, detail in c.plans_finished])
            return [db.execute("INSERT OR IGNORE INTO outbox (channel, key, item) VALUES (?, ?, ?)",
                               (item.channel, item.key, dump(item))).rowcount == 1 for item in c.outbox]

    # -- order idempotency -----------------------------------------------------------------
    async def claim_plan(self, plan_id: str, account: str, ts_ms: int) -> bool:
        cur = self._db.execute("INSERT OR IGNORE INTO plans (plan_id, account, ts_ms) VALUES (?, ?, ?)",
                               (plan_id, account, ts_ms))
        return cur.rowcount == 1

    async def finish_plan(self, plan_id: str, state: str, detail: dict[str, Any] | None = None) -> None:
        self._db.execute("UPDATE plans SET state = ?, detail = ? WHERE plan_id = ?",
                         (state, orjson.dumps(detail or {}), plan_id))

    async def open_plans(self) -> list[PlanRecord]:
        rows = self._db.execute("SELECT plan_id, account, ts_ms, state, detail FROM plans WHERE state = 'claimed' "
                                "ORDER BY ts_ms")
        return [PlanRecord(p, a, t, s, orjson.loads(d)) for p, a, t, s, d in rows]

    # -- journal ---------------------------------------------------------------------------
    async def journal(self, kind: str, account: str, ts_ms: int, record: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO journal (kind, account, ts_ms, record) VALUES (?, ?, ?, ?)",
                         (kind, account, ts_ms, orjson.dumps(record)))

    async def read_journal(self, account: str | None = None, since_ms: int | None = None,
                           limit: int | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if account is not None:
            where.append("account = ?")
            args.append(account)
        if since_ms is not None:
            where.append("ts_ms >= ?")
            args.append(since_ms)
        sql = "SELECT kind, account, ts_ms, record FROM journal" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY seq DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        rows = list(self._db.execute(sql, args))
        rows.reverse()
        return [{"kind": k, "account": a, "ts_ms": t, **orjson.loads(r)} for k, a, t, r in rows]

    async def trim_journal(self, before_ms: int) -> int:
        return self._db.execute("DELETE FROM journal WHERE ts_ms < ?", (before_ms,)).rowcount

    # -- snapshots -------------------------------------------------------------------------
    async def put_snapshot(self, snap: AccountSnapshot) -> None:
        self._put(_SNAPSHOT, snap.account, dump(snap))

    async def put_snapshots(self, snaps: list[AccountSnapshot]) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", [(_SNAPSHOT, s.account, dump(s)) for s in snaps])

    async def snapshots(self) -> dict[str, AccountSnapshot]:
        snaps = [load(AccountSnapshot, v) for v in self._values(_SNAPSHOT)]
        return {s.account: s for s in snaps}

    async def delete_snapshot(self, account: str) -> None:
        self._delete(_SNAPSHOT, account)

    # -- alerts ----------------------------------------------------------------------------
    async def put_alert(self, alert: AlertRecord) -> None:
        self._put(_ALERT, f"{alert.account}\x1f{alert.level}", dump(alert))

    async def delete_alert(self, account: str, level: str) -> None:
        self._delete(_ALERT, f"{account}\x1f{level}")

    async def alerts(self) -> list[AlertRecord]:
        return [load(AlertRecord, v) for v in self._values(_ALERT)]

    # -- outbox ----------------------------------------------------------------------------
    async def outbox_add(self, item: OutboxItem) -> bool:
        cur = self._db.execute("INSERT OR IGNORE INTO outbox (channel, key, item) VALUES (?, ?, ?)",
                               (item.channel, item.key, dump(item)))
        return cur.rowcount == 1

    async def outbox_pending(self, channel: str, limit: int = 100) -> list[OutboxItem]:
        rows = self._db.execute("SELECT item FROM outbox WHERE channel = ? AND done = 0 ORDER BY seq LIMIT ?",
                                (channel, limit))
        return [load(OutboxItem, v) for (v,) in rows]

    async def outbox_done(self, channel: str, key: str) -> None:
        self._db.execute("UPDATE outbox SET done = 1 WHERE channel = ? AND key = ?", (channel, key))
        self._done_since_trim += 1
        if self._done_since_trim >= _TRIM_EVERY:  # trimming walks the kept keys: not on every delivery
            self._done_since_trim = 0
            self._db.execute("DELETE FROM outbox WHERE channel = ? AND done = 1 AND seq <= "
                             "(SELECT seq FROM outbox WHERE channel = ? AND done = 1 ORDER BY seq DESC "
                             "LIMIT 1 OFFSET ?)", (channel, channel, _DELIVERED_KEEP))

    async def outbox_retry(self, channel: str, key: str) -> None:
        row = self._db.execute("SELECT item FROM outbox WHERE channel = ? AND key = ? AND done = 0",
                               (channel, key)).fetchone()
        if row:
            item = load(OutboxItem, row[0])
            self._db.execute("UPDATE outbox SET item = ? WHERE channel = ? AND key = ?",
                             (dump(OutboxItem(item.channel, item.key, item.ts_ms, item.payload, item.attempts + 1)),
                              channel, key))

    async def outbox_depth(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT channel, COUNT(*) FROM outbox WHERE done = 0 GROUP BY channel"))

    # -- silences --------------------------------------------------------------------------
    async def put_silence(self, silence: Silence) -> None:
        self._put(_SILENCE, silence.id, dump(silence))

    async def delete_silence(self, silence_id: str) -> bool:
        return self._delete(_SILENCE, silence_id)

    async def silences(self, now_ms: int | None = None) -> list[Silence]:
        found = [load(Silence, v) for v in self._values(_SILENCE)]
        return [s for s in found if now_ms is None or s.until_ms > now_ms]

    # -- kill switch -----------------------------------------------------------------------
    async def set_kill_switch(self, ks: KillSwitch) -> None:
        self._put(_CONTROL, "kill_switch", dump(ks))

    async def kill_switch(self) -> KillSwitch | None:
        row = self._db.execute("SELECT value FROM kv WHERE space = ? AND key = 'kill_switch'", (_CONTROL,)).fetchone()
        return load(KillSwitch, row[0]) if row else None

    # -- lease -----------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl_ms: int) -> Lease | None:
        now = self._clock_ms()
        with self._transaction() as db:
            row = db.execute("SELECT holder, token, expires_ms FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[2] > now:
                return None
            token = (row[1] if row is not None else 0) + (0 if row is not None and row[0] == holder
                                                          and row[2] > now else 1)
            db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)", (name, holder, token, now + ttl_ms))
        return Lease(name, holder, token, now + ttl_ms)

    async def release_lease(self, name: str, holder: str) -> None:
        # Expire rather than delete: the token counter must keep rising across tenures.
        self._db.execute("UPDATE leases SET expires_ms = 0 WHERE name = ? AND holder = ?", (name, holder))

    async def check_fence(self, name: str, token: int) -> bool:
        lease = await self.lease(name)
        return lease is not None and lease.token == token

    async def lease(self, name: str) -> Lease | None:
        row = self._db.execute("SELECT holder, token, expires_ms FROM leases WHERE name = ?", (name,)).fetchone()
        if row is None or row[2] <= self._clock_ms():
            return None
        return Lease(name, row[0], row[1], row[2])

    async def close(self) -> None:
        self._db.close()


class MemoryStore(SqliteStore):
    """A store that forgets on exit (tests, one-off tools): the same code as the file store."""
    name = "memory"

    def __init__(self, clock_ms: Callable[[], int] = wall_clock_ms):
        super().__init__(":memory:", clock_ms)
