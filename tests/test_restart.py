"""Restarts: the paper ledger, cooldowns and caps come back; a plan a crash left open is
closed, never executed again; the kill switch stops trading, not monitoring."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from monitor.config import parse_settings
from monitor.model import EventKind, wall_clock_ms
from monitor.sdnotify import SystemdNotifier
from monitor.service import run_daemon, warm_start
from monitor.store.sqlite import SqliteStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.test_daemon import ListNotifier, ScriptedFeed, crash_ticks, fast_settings, run_until


def settings_in(tmp_path: Path, contract_config: Path, **execution):
    s = fast_settings(contract_config)
    raw = s.model_dump(exclude_none=True)
    raw["daemon"]["state_dir"] = str(tmp_path / "state")
    raw["execution"] = {**raw["execution"], **execution}
    raw["alerts"] = {"group_wait_s": 0}  # nothing here is about grouping: deliver at once
    return parse_settings(raw)


def idle_daemon(settings, store):
    """A daemon whose feed sends nothing: for what happens before the first tick."""
    return build_daemon(settings, default_registry(), store=store, feeds=[ScriptedFeed([])])


async def crash_until_settled(settings, store) -> object:
    d = build_daemon(settings, default_registry(), store=store, feeds=[ScriptedFeed(crash_ticks())],
                     notifiers=[(ListNotifier(), None)])

    async def condition():
        await asyncio.wait_for(d.settled.wait(), 10)
    assert await run_until(d, condition) == 0
    return d


async def test_a_restart_resumes_the_paper_ledger_and_the_caps(tmp_path: Path, contract_config: Path) -> None:
    settings = settings_in(tmp_path, contract_config)
    store = SqliteStore(tmp_path / "state.sqlite")
    first = await crash_until_settled(settings, store)
    i = first.monitor.engine.account_index["main"]
    traded_book = first.monitor.engine.books[i]
    actions = first.monitor.rules.state[i].actions_today
    assert actions == 1 and traded_book != idle_daemon(settings, store).monitor.engine.books[i]
    await store.close()

    reopened = SqliteStore(tmp_path / "state.sqlite")
    second = idle_daemon(settings, reopened)
    await warm_start(second)
    assert second.monitor.engine.books[i] == traded_book  # not the config's holdings: what was traded since
    assert second.monitor.rules.state[i].actions_today == actions  # a restart does not reset the daily cap
    assert second.monitor.rules.state[i].last_action_ms == first.monitor.rules.state[i].last_action_ms
    await reopened.close()


async def test_edited_holdings_in_the_config_win_over_the_snapshot(tmp_path: Path, contract_config: Path) -> None:
    settings = settings_in(tmp_path, contract_config)
    store = SqliteStore(tmp_path / "state.sqlite")
    await crash_until_settled(settings, store)
    raw = settings.model_dump(exclude_none=True)
    raw["accounts"][0]["holdings"] = {**raw["accounts"][0]["holdings"], "BTC": 3.0}
    edited = parse_settings(raw)
    d = idle_daemon(edited, store)
    fresh = idle_daemon(edited, SqliteStore(":memory:"))
    await warm_start(d)
    assert d.monitor.engine.books[0] == fresh.monitor.engine.books[0]
    await store.close()


async def test_a_plan_left_open_by_a_crash_is_closed_not_repeated(tmp_path: Path, contract_config: Path) -> None:
    settings = settings_in(tmp_path, contract_config)
    store = SqliteStore(tmp_path / "state.sqlite")
    # The process died between claiming these plans and recording their outcome;
    # one of them got as far as the journal.
    assert await store.claim_plan("p-unrecorded", "main", 1_000)
    assert await store.claim_plan("p-journaled", "main", 1_000)
    await store.journal("execution", "main", 1_001, {"plan_id": "p-journaled", "fills": []})
    d = idle_daemon(settings, store)
    await warm_start(d)
    assert await store.open_plans() == []
    states = {p: (await store.claim_plan(p, "main", 2_000)) for p in ("p-unrecorded", "p-journaled")}
    assert states == {"p-unrecorded": False, "p-journaled": False}  # neither can ever run again
    rows = dict(store._db.execute("SELECT plan_id, state FROM plans"))
    assert rows == {"p-unrecorded": "abandoned", "p-journaled": "done"}
    await store.close()


async def test_the_kill_switch_stops_trading_but_not_alerts(tmp_path: Path, contract_config: Path) -> None:
    from monitor.store.base import KillSwitch
    for engage in ("store", "file", "config"):
        settings = settings_in(tmp_path / engage, contract_config, kill_switch=engage == "config")
        store = SqliteStore(tmp_path / engage / "state.sqlite")
        if engage == "store":
            await store.set_kill_switch(KillSwitch(True, 0, "desk says stop", "test"))
        if engage == "file":
            (tmp_path / engage / "state").mkdir(parents=True)
            (tmp_path / engage / "state" / "KILL").touch()
        notifier = ListNotifier()
        d = build_daemon(settings, default_registry(), store=store, feeds=[ScriptedFeed(crash_ticks())],
                         notifiers=[(notifier, None)])

        async def condition():
            await notifier.wait_for(lambda e: e.level == "act" and e.kind == EventKind.FIRING)
            await asyncio.wait_for(d.settled.wait(), 10)
        assert await run_until(d, condition) == 0
        assert d.not_executed and "kill switch" in d.not_executed[0].refused, engage
        assert await store.read_journal() == [] and await store.open_plans() == []  # nothing claimed
        await store.close()


def test_snapshot_books_are_plain_data(tmp_path: Path, contract_config: Path) -> None:
    from monitor.persistence import snapshot_of
    d = idle_daemon(settings_in(tmp_path, contract_config), SqliteStore(":memory:"))
    snap = snapshot_of(d.monitor, 0, 5)
    book = d.monitor.engine.books[0]
    assert snap.book == {a: {f: getattr(e, f) for f in e.__slots__} for a, e in book.exposures.items()
                         if not e.is_empty}
    assert replace(snap, ts_ms=6).config_digest == snap.config_digest


class StopWatch(SystemdNotifier):
    """Knows when shutdown began (it says STOPPING=1 right before cancelling the workers)."""

    def __init__(self) -> None:
        super().__init__(environ={})
        self.stopping_now = asyncio.Event()

    def stopping(self) -> None:
        super().stopping()
        self.stopping_now.set()


class HeldExecutor:
    """The paper executor, held at the venue until released: an order in flight at shutdown."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def execute(self, plan):
        self.entered.set()
        await self.release.wait()
        return await self.inner.execute(plan)


async def test_an_execution_in_flight_at_shutdown_is_settled_not_dropped(tmp_path: Path,
                                                                          contract_config: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite")
    watch = StopWatch()
    d = build_daemon(settings_in(tmp_path, contract_config), default_registry(), store=store,
                     feeds=[ScriptedFeed(crash_ticks())], notifiers=[(ListNotifier(), None)], notifier=watch)
    held = HeldExecutor(d.executor.inner)
    d.executor.inner = held
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(d, stop))
    await asyncio.wait_for(held.entered.wait(), 10)
    stop.set()
    await asyncio.wait_for(watch.stopping_now.wait(), 10)  # the execution worker is cancelled by now
    held.release.set()
    assert await asyncio.wait_for(task, 15) == 0
    i = d.monitor.engine.account_index["main"]
    journal = await store.read_journal()
    assert len(journal) == 1 and d.monitor.rules.state[i].actions_today == 1  # the fills were applied
    snap = (await store.snapshots())["main"]
    assert snap.book["USDT"]["debt"] < 50_000 and snap.rules["actions_today"] == 1  # and persisted
    await store.close()


async def test_alerts_restored_from_the_store_clear_if_they_no_longer_hold(tmp_path: Path,
                                                                          contract_config: Path) -> None:
    """A "blind" alert and an alert of an account since removed, both left firing by the last
    run: fresh prices clear the first (which would otherwise mute the account's ratio alerts)
    and the second resolves as removed."""
    from monitor.alerts.content import Alert
    from monitor.alerts.policy import Active
    from monitor.model import LevelEvent, wall_clock_ms
    from monitor.store.base import AlertRecord
    store = SqliteStore(tmp_path / "state.sqlite")
    for account, level, kind in (("main", "stale", EventKind.STALE), ("gone", "warn", EventKind.FIRING)):
        alert = Alert.from_event(LevelEvent(account, level, kind, 1.2, 1.2, 1_000))
        await store.put_alert(Active(alert, last_sent_ms=1_000).record())
    await store.put_alert(AlertRecord("main", "act", 1_000, 1_000, data={"from": "another version"}))
    notifier = ListNotifier()
    d = build_daemon(settings_in(tmp_path, contract_config), default_registry(), store=store,
                     feeds=[ScriptedFeed(crash_ticks(wall_clock_ms()))], notifiers=[(notifier, None)])

    async def condition():
        await notifier.wait_for(lambda e: (e.account, e.level, e.kind) == ("main", "stale", EventKind.FRESH))
        await notifier.wait_for(lambda e: (e.account, e.kind) == ("gone", EventKind.RESOLVED))
        await notifier.wait_for(lambda e: (e.account, e.level, e.kind) == ("main", "warn", EventKind.FIRING))
    assert await run_until(d, condition) == 0
    assert {(a.account, a.level) for a in await store.alerts()} <= {("main", "warn"), ("main", "act")}
    await store.close()


async def test_the_running_daemon_drops_journal_entries_past_retention(tmp_path: Path, contract_config: Path) -> None:
    raw = settings_in(tmp_path, contract_config).model_dump(exclude_none=True)
    raw["store"] = {"journal_keep_days": 30}
    settings = parse_settings(raw)
    store = SqliteStore(tmp_path / "state.sqlite")
    now = wall_clock_ms()
    await store.journal("execution", "main", now - 31 * 86_400_000, {"n": "old"})
    await store.journal("execution", "main", now - 29 * 86_400_000, {"n": "kept"})
    d = idle_daemon(settings, store)

    async def trimmed():
        while len(await store.read_journal()) != 1:
            await asyncio.sleep(0.01)
    assert await run_until(d, lambda: asyncio.wait_for(trimmed(), 10)) == 0
    assert [e["n"] for e in await store.read_journal()] == ["kept"]
    await store.close()
