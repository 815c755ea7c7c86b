"""One contract, every backend: the embedded SQLite file and a real redis-server."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from monitor.model import wall_clock_ms
from monitor.retention import DAY_MS, trim_once
from monitor.store.base import AccountSnapshot, AlertRecord, Commit, JournalEntry, KillSwitch, OutboxItem, Silence
from monitor.store.sqlite import SqliteStore
from tests.redis_server import free_port

_prefixes = itertools.count()


def _opener(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    """A function that opens the test's store (again: a reopen must see the same state)."""
    if kind == "sqlite":
        return lambda: SqliteStore(tmp_path / "state.sqlite")
    from monitor.store.redis import RedisStore
    server = request.getfixturevalue("redis_session")
    prefix = f"t{next(_prefixes)}"
    return lambda: RedisStore(server.url, prefix)


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path):
    return _opener(request.param, tmp_path, request)


@pytest.fixture
async def store(opener):
    s = opener()
    yield s
    await s.close()


async def test_the_journal_is_trimmed_to_its_retention(store) -> None:
    for n in (1, 2):
        await store.journal("execution", "main", wall_clock_ms(), {"n": n})
    cutoff = wall_clock_ms() + 1
    while wall_clock_ms() <= cutoff:  # the next entry is recorded strictly after the cutoff
        await asyncio.sleep(0.001)
    await store.journal("execution", "main", wall_clock_ms(), {"n": 3})
    assert await store.trim_journal(cutoff - 86_400_000) == 0  # nothing that old
    assert await store.trim_journal(cutoff) == 2
    assert [e["n"] for e in await store.read_journal()] == [3]


async def test_retention_drops_old_entries_and_rides_out_an_unreachable_store(store) -> None:
    await store.journal("execution", "main", wall_clock_ms(), {"n": 1})
    later = wall_clock_ms() + 2 * DAY_MS
    assert await trim_once(store, keep_days=1, now_ms=later) == 1
    assert await store.read_journal() == []



async def test_retention_skips_a_pass_while_redis_is_unreachable() -> None:
    from monitor.store.redis import RedisStore
    down = RedisStore(f"redis://127.0.0.1:{free_port()}", "t-down")  # nothing listens there
    try:
        assert await trim_once(down, keep_days=1, now_ms=wall_clock_ms()) is None
    finally:
        await down.close()


async def test_a_plan_is_claimed_once_and_open_until_finished(store) -> None:
    assert await store.claim_plan("p1", "main", 1000)
    assert not await store.claim_plan("p1", "main", 2000)
    assert await store.claim_plan("p2", "other", 900)
    assert [p.plan_id for p in await store.open_plans()] == ["p2", "p1"]  # oldest first
    await store.finish_plan("p1", "done", {"fills": 1})
    assert [p.plan_id for p in await store.open_plans()] == ["p2"]
    assert not await store.claim_plan("p1", "main", 3000)  # finished keys still refuse


async def test_journal_keeps_order_and_filters(store) -> None:
    for i in range(6):
        await store.journal("execution", "a" if i % 2 else "b", 1000 + i, {"n": i})
    everything = await store.read_journal()
    assert [e["n"] for e in everything] == list(range(6))
    assert everything[0] == {"kind": "execution", "account": "b", "ts_ms": 1000, "n": 0}
    assert [e["n"] for e in await store.read_journal("a")] == [1, 3, 5]
    assert [e["n"] for e in await store.read_journal(since_ms=1003)] == [3, 4, 5]
    assert [e["n"] for e in await store.read_journal(limit=2)] == [4, 5]  # the newest, oldest first


async def test_snapshots_alerts_silences_and_kill_switch(store) -> None:
    snap = AccountSnapshot("main", 5, 1.25, "warn", {"BTC": {"qty": 1.0}}, "d1")
    await store.put_snapshot(snap)
    await store.put_snapshot(AccountSnapshot("main", 6, 1.2, "act", {"BTC": {"qty": 0.5}}, "d1"))
    await store.put_snapshot(AccountSnapshot("other", 6, None, None, {}, ""))
    got = await store.snapshots()
    assert got["main"].book == {"BTC": {"qty": 0.5}} and got["main"].level == "act" and got["other"].health is None
    await store.delete_snapshot("other")
    assert list(await store.snapshots()) == ["main"]

    await store.put_alert(AlertRecord("main", "warn", 100, 120, 1.21))
    await store.put_alert(AlertRecord("main", "act", 110))
    await store.delete_alert("main", "warn")
    assert [(a.account, a.level, a.since_ms) for a in await store.alerts()] == [("main", "act", 110)]

    await store.put_silence(Silence("s1", "main", None, until_ms=10_000, created_ms=0, comment="maintenance"))
    await store.put_silence(Silence("s2", "*", "warn", until_ms=500, created_ms=0))
    assert {s.id for s in await store.silences()} == {"s1", "s2"}
    assert [s.id for s in await store.silences(now_ms=1000)] == ["s1"]
    assert await store.delete_silence("s1") and not await store.delete_silence("s1")

    assert await store.kill_switch() is None
    await store.set_kill_switch(KillSwitch(True, 7, "desk says stop", "cli"))
    ks = await store.kill_switch()
    assert ks.engaged and ks.reason == "desk says stop"


async def test_outbox_delivers_each_key_once_in_order(store) -> None:
    items = [OutboxItem("slack", f"k{i}", i, {"text": f"m{i}"}) for i in range(3)]
    for it in items:
        assert await store.outbox_add(it)
    assert not await store.outbox_add(items[1])  # queued already
    await store.outbox_add(OutboxItem("telegram", "k0", 0, {"text": "t"}))
    assert await store.outbox_depth() == {"slack": 3, "telegram": 1}
    assert [i.key for i in await store.outbox_pending("slack")] == ["k0", "k1", "k2"]
    await store.outbox_retry("slack", "k0")
    assert (await store.outbox_pending("slack", limit=1))[0].attempts == 1
    await store.outbox_done("slack", "k0")
    assert [i.key for i in await store.outbox_pending("slack")] == ["k1", "k2"]
    assert not await store.outbox_add(items[0])  # delivered already: a late duplicate is refused
    await store.outbox_done("telegram", "k0")
    assert await store.outbox_depth() == {"slack": 2}


async def test_lease_has_one_holder_and_rising_fencing_tokens(store) -> None:
    a = await store.acquire_lease("trading", "A", 60_000)
    assert a is not None and a.holder == "A"
    assert await store.acquire_lease("trading", "B", 60_000) is None
    renewed = await store.acquire_lease("trading", "A", 60_000)
    assert renewed.token == a.token  # a renewal keeps the tenure
    assert (await store.lease("trading")).holder == "A"
    await store.release_lease("trading", "A")
    b = await store.acquire_lease("trading", "B", 60_000)
    assert b is not None and b.token > a.token
    assert await store.check_fence("trading", b.token)
    assert not await store.check_fence("trading", a.token)  # the old leader is fenced off


async def test_an_expired_lease_passes_to_another_instance(store) -> None:
    a = await store.acquire_lease("trading", "A", 150)

    async def b_takes_over():
        while (b := await store.acquire_lease("trading", "B", 60_000)) is None:
            await asyncio.sleep(0.02)
        return b

    b = await asyncio.wait_for(b_takes_over(), 5)
    assert b.token > a.token
    assert not await store.check_fence("trading", a.token)
    assert await store.acquire_lease("trading", "A", 60_000) is None  # A, back from its pause, must not trade


async def test_state_survives_reopening(opener) -> None:
    first = opener()
    await first.claim_plan("p1", "main", 1)
    await first.journal("execution", "main", 1, {"n": 1})
    await first.outbox_add(OutboxItem("slack", "k", 1, {"text": "x"}))
    await first.close()
    second = opener()
    try:
        assert not await second.claim_plan("p1", "main", 2)
        assert [e["n"] for e in await second.read_journal()] == [1]
        assert [i.key for i in await second.outbox_pending("slack")] == ["k"]
    finally:
        await second.close()


async def test_redis_prefixes_keep_deployments_apart(redis_session) -> None:
    from monitor.store.redis import RedisStore
    one, two = RedisStore(redis_session.url, "deploy-one"), RedisStore(redis_session.url, "deploy-two")
    try:
        await one.journal("execution", "main", 1, {"n": 1})
        await one.claim_plan("p", "main", 1)
        assert await two.read_journal() == []
        assert await two.claim_plan("p", "main", 1)
    finally:
        await one.close()
        await two.close()


async def test_snapshots_in_bulk(store) -> None:
    snaps = [AccountSnapshot(f"a{i}", i, 1.0 + i, None, {"BTC": {"qty": float(i)}}, "d") for i in range(5)]
    await store.put_snapshots(snaps)
    await store.put_snapshots([])
    got = await store.snapshots()
    assert [got[f"a{i}"].book["BTC"]["qty"] for i in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_a_commit_lands_whole_and_counts_once(store) -> None:
    await store.claim_plan("p1", "main", 1)
    await store.put_alert(AlertRecord("main", "old", 1))
    snap = AccountSnapshot("main", 5, 1.4, None, {"BTC": {"held": 1.0}}, rules={"last_action_ms": 5})
    c = Commit(alerts=(AlertRecord("main", "act", 5, last_sent_ms=5, worst_health=1.1),),
               alerts_deleted=(("main", "old"),),
               outbox=(OutboxItem("hook", "k1", 5, {"n": 1}), OutboxItem("slack", "k1", 5, {"n": 1})),
               journal=(JournalEntry("execution", "main", 5, {"plan_id": "p1"}),),
               plans_finished=(("p1", "done", {}),), snapshots=(snap,))
    assert await store.commit(c) == [True, True]
    assert await store.commit(c) == [False, False]  # the same commit again (a retry): nothing twice
    again = Commit(outbox=(OutboxItem("hook", "k1", 6, {"n": 2}), OutboxItem("hook", "k2", 6, {"n": 3})))
    assert await store.commit(again) == [False, True]  # a key once per channel, across commits
    assert [(a.level, a.worst_health) for a in await store.alerts()] == [("act", 1.1)]
    assert [e["plan_id"] for e in await store.read_journal()] == ["p1"]
    assert await store.open_plans() == []
    assert (await store.snapshots())["main"] == snap
    assert [i.key for i in await store.outbox_pending("hook")] == ["k1", "k2"]
    assert await store.commit(Commit()) == []
