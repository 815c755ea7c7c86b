"""Redis going away and coming back: writes are buffered in order, nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.store.base import AccountSnapshot, StoreUnavailable
from monitor.store.redis import RedisStore


async def until(predicate, timeout: float = 10.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


async def test_outage_buffers_in_order_and_flushes_on_return(redis_server, tmp_path: Path) -> None:
    reports: list[tuple[bool, str]] = []
    store = RedisStore(redis_server.url, "cm", spill_path=tmp_path / "spill.jsonl", timeout_s=0.5,
                       on_outage=lambda down, detail: reports.append((down, detail)))
    try:
        await store.journal("execution", "main", 1, {"n": 0})
        redis_server.stop()
        for n in range(1, 6):  # monitoring goes on: writes never raise
            await store.journal("execution", "main", 1 + n, {"n": n})
        for h in (1.3, 1.2, 1.1):  # last write wins: coalesced while queued
            await store.put_snapshot(AccountSnapshot("main", 9, h, None, {}, ""))
        assert store.buffered_writes == 6
        with pytest.raises(StoreUnavailable):
            await store.read_journal()
        with pytest.raises(StoreUnavailable):  # no order without its idempotency key
            await store.claim_plan("p1", "main", 1)
        assert reports == [(True, reports[0][1])]

        redis_server.start()
        await until(lambda: store.buffered_writes == 0)
        assert [e["n"] for e in await store.read_journal()] == list(range(6))
        assert (await store.snapshots())["main"].health == 1.1
        assert [r[0] for r in reports] == [True, False]  # the outage and the recovery, once each
    finally:
        await store.close()


async def test_overflow_spills_to_disk_and_survives_a_restart(redis_server, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    store = RedisStore(redis_server.url, "cm", buffer_max=3, spill_path=spill, timeout_s=0.5)
    redis_server.stop()
    for n in range(10):
        await store.journal("execution", "main", n, {"n": n})
    await store.put_snapshots([AccountSnapshot("main", 1, 1.2, None, {"BTC": {"qty": 1.0}}, "")])
    assert store.buffered_writes == 11 and spill.exists()
    await store.close()  # the daemon stops during the outage: what is queued goes to the spill file

    redis_server.start()
    again = RedisStore(redis_server.url, "cm", buffer_max=3, spill_path=spill, timeout_s=0.5)
    try:
        await again.journal("execution", "main", 10, {"n": 10})  # after the spilled writes, not before
        await until(lambda: again.buffered_writes == 0)
        assert [e["n"] for e in await again.read_journal()] == list(range(11))
        assert (await again.snapshots())["main"].book == {"BTC": {"qty": 1.0}}  # bytes survive the spill file
        assert not spill.exists()
    finally:
        await again.close()


async def test_trading_in_an_outage_only_when_allowed(redis_server, tmp_path: Path) -> None:
    store = RedisStore(redis_server.url, "cm", allow_trading_in_outage=True, timeout_s=0.5)
    try:
        redis_server.stop()
        assert await store.claim_plan("p1", "main", 1)
        assert not await store.claim_plan("p1", "main", 1)  # still never twice
        redis_server.start()
        await until(lambda: store.buffered_writes == 0)
        assert not await store.claim_plan("p1", "main", 1)  # the key reached Redis
        assert [p.plan_id for p in await store.open_plans()] == ["p1"]
    finally:
        await store.close()


async def test_an_outage_seen_only_by_reads_is_reported_once(redis_server, tmp_path: Path) -> None:
    reports: list[bool] = []
    store = RedisStore(redis_server.url, "cm", timeout_s=0.5, on_outage=lambda down, detail: reports.append(down))
    try:
        redis_server.stop()
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                await store.snapshots()
        assert reports == [True] and store.in_outage  # nothing queued is no proof Redis is back
        redis_server.start()
        await until(lambda: reports == [True, False])
        assert await store.snapshots() == {}
    finally:
        await store.close()


async def test_a_write_refused_for_good_is_set_aside_and_the_rest_flows(redis_server, tmp_path: Path) -> None:
    from monitor.store.writebuffer import Op
    spill = tmp_path / "spill.jsonl"
    store = RedisStore(redis_server.url, "cm", spill_path=spill, timeout_s=0.5, buffer_max=1)
    try:
        redis_server.stop()
        await store.journal("execution", "main", 1, {"n": 1})
        await store._writes.submit(Op("no-such-operation", ("x",)))  # refused by the store whatever happens
        await store.journal("execution", "main", 2, {"n": 2})
        with spill.open("ab") as f:
            f.write(b'["journal", ["execution", "main", 3')  # a line cut short by a crash
        store._writes._spilled += 1
        redis_server.start()
        await until(lambda: store.buffered_writes == 0)
        assert [e["n"] for e in await store.read_journal()] == [1, 2]
        assert store._writes.set_aside == 2
        dead = spill.with_suffix(".dead.jsonl").read_bytes().splitlines()
        assert len(dead) == 2 and b"no-such-operation" in dead[0]
    finally:
        await store.close()


async def test_after_a_redis_restart_no_dead_pooled_connection_surfaces(redis_server) -> None:
    store = RedisStore(redis_server.url, "restart")
    try:
        # Several commands at once: the pool holds several connections, all dead after the restart.
        await asyncio.gather(store.snapshots(), store.alerts(), store.open_plans(), store.silences())
        redis_server.stop()
        redis_server.start()
        for _ in range(4):
            assert await store.alerts() == []
    finally:
        await store.close()


async def test_a_store_down_at_start_means_no_order_and_no_overwrite_until_it_loads(redis_server, tmp_path: Path,
                                                                                     contract_config: Path) -> None:
    """Redis is down when the daemon starts: it monitors and alerts from the config's books but
    places no order and writes no book; when Redis returns it loads the stored state by itself."""
    import asyncio as aio

    from monitor.persistence import config_digest
    from monitor.service import run_daemon
    from monitor.store.base import AccountSnapshot
    from monitor.wiring import build_daemon
    from strategies import default_registry
    from tests.test_daemon import ListNotifier, ScriptedFeed, crash_ticks
    from tests.test_restart import settings_in

    settings = settings_in(tmp_path, contract_config)
    store = RedisStore(redis_server.url, "down-at-start", spill_path=tmp_path / "spill.jsonl")
    d0 = build_daemon(settings, default_registry(), store=store, feeds=[ScriptedFeed([])])
    stored = AccountSnapshot("main", 1, 2.0, None, {"BTC": {"qty": 0.21}, "USDT": {"debt": 5000.0}},
                             config_digest(d0.monitor.books_cfg["main"]), {"actions_today": 3})
    await store.put_snapshot(stored)
    redis_server.stop()

    notifier = ListNotifier()
    d = build_daemon(settings, default_registry(), store=store, feeds=[ScriptedFeed(crash_ticks())],
                     notifiers=[(notifier, None)])
    stop = aio.Event()
    task = aio.create_task(run_daemon(d, stop))
    await aio.wait_for(d.settled.wait(), 15)  # the crash breaches "act": a plan is made ...
    assert d.not_executed and "state not loaded" in d.not_executed[0].refused  # ... and refused
    assert not d.loaded.is_set()
    redis_server.start()
    await aio.wait_for(d.loaded.wait(), 15)  # back: loaded by itself
    i = d.monitor.engine.account_index["main"]
    assert d.monitor.engine.books[i].exposures["BTC"].qty == 0.21  # the stored book, not the config's
    assert d.monitor.rules.state[i].actions_today == 3
    stop.set()
    assert await aio.wait_for(task, 20) == 0
    assert await store.read_journal() == []  # no order while the state was not loaded
    await store.close()
