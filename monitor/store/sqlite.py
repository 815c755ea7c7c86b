"""The embedded default store: one SQLite file in the state directory.

WAL mode and a commit per write: a kill at any instant loses at most the write
in flight, never a committed one, and never corrupts the file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (plan_id TEXT PRIMARY KEY, account TEXT NOT NULL, ts_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, account TEXT NOT NULL, record BLOB NOT NULL
);
"""


class SqliteStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def claim_plan(self, plan_id: str, account: str, ts_ms: int) -> bool:
        cur = self._db.execute("INSERT OR IGNORE INTO plans VALUES (?, ?, ?)", (plan_id, account, ts_ms))
        return cur.rowcount == 1

    def journal(self, kind: str, account: str, record: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO journal (kind, account, record) VALUES (?, ?, ?)",
                         (kind, account, orjson.dumps(record)))

    def read_journal(self, account: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT kind, account, record FROM journal"
        rows = self._db.execute(sql + (" WHERE account = ?" if account else "") + " ORDER BY seq",
                                (account,) if account else ())
        return [{"kind": k, "account": a, **orjson.loads(r)} for k, a, r in rows]

    def close(self) -> None:
        self._db.close()
