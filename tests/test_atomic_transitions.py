"""A transition and its consequence land together: faults injected between what used to be
two writes (an alert saved as notified, its notification; a fill journaled, the book that
shows it) lose nothing and repeat nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from monitor.alerts.content import Alert
from monitor.alerts.policy import Active, AlertPolicy
from monitor.model import EventKind, LevelEvent
from monitor.store.base import Commit
from monitor.store.sqlite import SqliteStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.test_alerts_daemon import HOOK, QueueFeed, Running, eventually, fakes, hook_alerts, settings_for  # noqa: F401
from tests.test_daemon import ListNotifier, ScriptedFeed, crash_ticks, run_until
from tests.test_restart import settings_in


def refuse_outbox_inserts(store: SqliteStore) -> None:
    """The disk fails right at the notification's write (the write after the alert's own)."""
    store._db.execute("CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk I/O'); END")


async def test_an_alert_is_never_saved_as_notified_without_its_notification(fakes, tmp_path: Path) -> None:
    _, _, hook = fakes
    settings = settings_for(3, [HOOK], {"group_wait_s": 0.05}, tmp_path)
    path = tmp_path / "state.sqlite"
    store = SqliteStore(path)
    refuse_outbox_inserts(store)
    feed = QueueFeed()
    base_ms = feed.base_ms
    run = Running(build_daemon(settings, default_registry(), store=store, feeds=[feed]))
    feed.push(60000, 40000)
    await hook.wait_for(lambda h: len(hook_alerts(h)) >= 3)  # memory delivers anyway while running
    first_run = len(hook.received)
    # ... but nothing of the transition was saved, so the next start knows it as news.
    assert await store.alerts() == []
    await run.close()  # a kill -9 here loses nothing: the store holds neither half
    await store.close()

    store = SqliteStore(path)
    store._db.execute("DROP TRIGGER fail_outbox")  # the disk is fine again
    feed = QueueFeed(base_ms)
    run = Running(build_daemon(settings, default_registry(), store=store, feeds=[feed]))
    await run.d.alerts.ready.wait()
    feed.push(40000, at_s=60)
    await hook.wait_for(lambda h: len(h.received) > first_run)
    await eventually(lambda: run.d.alerts.pending() == 0)
    assert await run.close() == 0
    alerts = [a for r in hook.received[first_run:] for a in r.json["alerts"]]
    assert sorted((a["account"], a["level"], a["state"]) for a in alerts) == [
        (f"acct-000{i}", "critical", "firing") for i in range(3)]
    saved = {(a.account, a.level): a.last_sent_ms for a in await store.alerts()}
    assert {k for k, sent in saved.items() if sent is not None} == {(f"acct-000{i}", "critical") for i in range(3)}
    await store.close()


class RecordingStore(SqliteStore):
    """Records each write that reaches the file, in order."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.writes: list[tuple[str, object]] = []

    async def commit(self, c: Commit) -> list[bool]:
        self.writes.append(("commit", c))
        return await super().commit(c)

    async def put_snapshots(self, snaps) -> None:
        self.writes.append(("snapshots", tuple(snaps)))
        await super().put_snapshots(snaps)

    async def journal(self, kind, account, ts_ms, record) -> None:
        self.writes.append(("journal", record))
        await super().journal(kind, account, ts_ms, record)


async def test_a_fill_is_journaled_in_the_same_commit_as_the_book_that_shows_it(tmp_path: Path,
                                                                              contract_config: Path) -> None:
    store = RecordingStore(tmp_path / "state.sqlite")
    d = build_daemon(settings_in(tmp_path, contract_config), default_registry(), store=store,
                     feeds=[ScriptedFeed(crash_ticks())], notifiers=[(ListNotifier(), None)])

    async def settled_and_written():
        await asyncio.wait_for(d.settled.wait(), 10)
        while d.snapshots.commits_pending:
            await asyncio.sleep(0.01)
    assert await run_until(d, settled_and_written) == 0
    assert not [w for w in store.writes if w[0] == "journal"]  # never a journal entry on its own
    n, outcome = next((n, w[1]) for n, w in enumerate(store.writes) if w[0] == "commit" and w[1].journal)
    (snap,) = outcome.snapshots
    plan_id = outcome.journal[0].record["plan_id"]
    assert outcome.plans_finished == ((plan_id, "done", {}),)
    assert snap.book["USDT"]["debt"] < 50_000 and snap.rules["actions_today"] == 1  # the book after the fills
    before = [s for kind, snaps in store.writes[:n] if kind == "snapshots" for s in snaps]
    assert all(s.rules.get("actions_today", 0) == 0 for s in before)  # no snapshot ran ahead of its journal entry
    await store.close()


async def test_a_refused_outcome_leaves_ledger_and_journal_agreeing(tmp_path: Path, contract_config: Path) -> None:
    """The disk fails at the plan's outcome: neither the journal nor the ledger shows the fill, and
    the next start closes the claim as abandoned, never executing it again."""
    settings = settings_in(tmp_path, contract_config)
    store = SqliteStore(tmp_path / "state.sqlite")
    store._db.execute("CREATE TRIGGER fail_journal BEFORE INSERT ON journal BEGIN SELECT RAISE(ABORT, 'disk I/O'); END")
    d = build_daemon(settings, default_registry(), store=store, feeds=[ScriptedFeed(crash_ticks())],
                     notifiers=[(ListNotifier(), None)])
    assert await run_until(d, lambda: asyncio.wait_for(d.settled.wait(), 10)) in (0, 1)
    assert await store.read_journal() == []
    assert all(s.rules.get("actions_today", 0) == 0 for s in (await store.snapshots()).values())
    [claimed] = await store.open_plans()
    store._db.execute("DROP TRIGGER fail_journal")
    from monitor.service import warm_start
    again = build_daemon(settings, default_registry(), store=store, feeds=[ScriptedFeed([])])
    await warm_start(again)
    assert await store.open_plans() == [] and not await store.claim_plan(claimed.plan_id, "main", 0)
    await store.close()


def test_a_resolved_after_a_restart_reports_the_whole_alert() -> None:
    policy = AlertPolicy(lambda level: 3_600_000, lambda account, level: 0)
    first = Alert.from_event(LevelEvent("main", "act", EventKind.FIRING, 1.05, 1.05, 1_000))
    policy.load([Active(first, last_sent_ms=1_000, worst_health=1.02).record()])  # from before the restart
    # The new process's rules saw the breach only since their own start.
    resolved = Alert.from_event(LevelEvent("main", "act", EventKind.RESOLVED, 1.4, 1.4, 90_000,
                                           min_health=1.08, since_ms=60_000))
    changes = policy.on_alert(resolved, 90_000)
    (sent,) = changes.notify
    assert (sent.since_ms, sent.min_health) == (1_000, 1.02)
    assert changes.delete == (("main", "act"),)
