"""Several instances on one Redis: one trades, the others watch; a dead or paused leader
is replaced within the lease TTL and can no longer place an order."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from monitor.config import parse_settings
from monitor.execution.gate import TradingGate
from monitor.lease import LeaseKeeper
from monitor.model import EventKind, Plan
from monitor.service import run_daemon
from monitor.store.redis import RedisStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.test_daemon import ListNotifier, ScriptedFeed, crash_ticks, fast_settings

_prefixes = itertools.count()


class GatedFeed(ScriptedFeed):
    """Sends its ticks once `go` is set: both instances see the same market from the same start."""

    def __init__(self, ticks, go: asyncio.Event):
        super().__init__(ticks)
        self.go = go

    async def run(self, sink) -> None:
        await self.go.wait()
        await super().run(sink)


def ha_settings(contract_config: Path, tmp_path: Path, instance: str, ttl_s: float):
    raw = fast_settings(contract_config).model_dump(exclude_none=True)
    raw["daemon"]["state_dir"] = str(tmp_path / instance)
    raw["daemon"]["snapshot_every_s"] = 0.2
    raw["ha"] = {"enabled": True, "lease_ttl_s": ttl_s, "instance_id": instance}
    raw["alerts"] = {"group_wait_s": 0}
    return parse_settings(raw)


# Long enough that a loaded CI machine never lets the leader's lease lapse mid-test.
TTL_S = 1.5


async def wait_until(predicate, timeout: float = 10.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


async def test_one_leader_trades_and_the_other_takes_over(redis_session, contract_config: Path,
                                                           tmp_path: Path) -> None:
    prefix = f"ha{next(_prefixes)}"
    stores = [RedisStore(redis_session.url, prefix) for _ in range(2)]
    go = asyncio.Event()
    channels = [ListNotifier(name="ops"), ListNotifier(name="ops")]  # one channel, seen from each instance
    daemons = [build_daemon(ha_settings(contract_config, tmp_path, name, TTL_S), default_registry(), store=store,
                            feeds=[GatedFeed(crash_ticks(), go)], notifiers=[(channel, None)])
               for name, store, channel in zip("AB", stores, channels)]
    a, b = daemons
    stops = [asyncio.Event(), asyncio.Event()]
    task_a = asyncio.create_task(run_daemon(a, stops[0]))
    try:
        await asyncio.wait_for(a.loaded.wait(), 10)
        assert a.lease.leading
        task_b = asyncio.create_task(run_daemon(b, stops[1]))
        await asyncio.wait_for(b.loaded.wait(), 10)  # B has tried for the lease
        go.set()
        await asyncio.wait_for(a.settled.wait(), 10)
        await asyncio.wait_for(b.settled.wait(), 10)  # B planned too, and was refused
        assert not b.lease.leading
        assert b.not_executed and all(e.refused == "not the leader: another instance trades" for e in b.not_executed)
        journal = await stores[0].read_journal()
        plan_ids = [e["plan_id"] for e in journal]
        assert plan_ids and len(plan_ids) == len(set(plan_ids))  # each plan executed once, by A
        token_a = a.lease.lease.token
        main = a.monitor.engine.account_index["main"]
        def held(d):
            return {k: e for k, e in d.monitor.engine.books[main].exposures.items() if not e.is_empty}
        await wait_until(lambda: held(b) == held(a))  # B's paper ledger follows A's fills
        await a.alerts.drain()
        await b.alerts.drain()
        sent = [(e.account, e.level, e.kind, e.ts_ms, e.repeat) for c in channels for e in c.events]
        assert ("main", "warn", EventKind.FIRING) in {s[:3] for s in sent}
        assert len(sent) == len(set(sent))  # deduplicated across the instances through the shared outbox

        await stores[0].claim_plan("left-open-by-A", "main", 1)  # as if A were mid-plan when it goes
        stops[0].set()  # A goes away: B takes over within the lease TTL
        assert await asyncio.wait_for(task_a, 10) == 0
        await wait_until(lambda: b.lease.leading, timeout=3 * TTL_S + 2)
        assert b.lease.lease.token > token_a

        async def closed() -> None:  # the new leader closes it before trading
            while await stores[1].open_plans():
                await asyncio.sleep(0.02)
        await asyncio.wait_for(closed(), 5)
    finally:
        for s in stops:
            s.set()
        await asyncio.gather(task_a, *([task_b] if "task_b" in locals() else []), return_exceptions=True)
        for s in stores:
            await s.close()


async def test_a_paused_leader_is_fenced_off(redis_session, tmp_path: Path) -> None:
    prefix = f"ha{next(_prefixes)}"
    store_a, store_b = RedisStore(redis_session.url, prefix), RedisStore(redis_session.url, prefix)
    try:
        a = LeaseKeeper(store_a, "A", ttl_s=0.3)
        await a.renew()
        assert a.leading and await a.may_trade()
        # A pauses (no renewal) while B keeps trying, as its keeper loop does.
        b = LeaseKeeper(store_b, "B", ttl_s=0.9)  # tries every 0.3 s
        b_loop = asyncio.create_task(b.run())
        await wait_until(lambda: b.leading, timeout=5)
        b_loop.cancel()
        assert a.lease is not None  # A still believes it leads...
        assert not await a.may_trade()  # ...but its token is no longer the one in force
        gate = TradingGate(store_a, tmp_path, config_engaged=False, lease=a)
        plan = Plan("main", "act", "repay_debt", 0, 1.1, 1.3)
        assert await gate(plan) == "not the leader: another instance trades"
        await a.renew()  # back from the pause: B holds the lease, A does not get it back
        assert not a.leading
    finally:
        await store_a.close()
        await store_b.close()


async def test_instances_that_see_a_breach_at_different_ticks_notify_it_once(redis_session, contract_config: Path,
                                                                            tmp_path: Path) -> None:
    """Each instance sees the crash at its own ticks (here B's are 250 ms later), so each would
    date the same transition differently. Only the leader notifies; the one that takes over goes
    on from the stored alerts: one FIRING, and its RESOLVED names the same firing. (A lease of 5 s:
    a loaded machine must never let A's lapse while B watches.)"""
    from monitor.model import PriceTick
    from tests.test_daemon import PushFeed
    prefix = f"ha{next(_prefixes)}"
    stores = [RedisStore(redis_session.url, prefix) for _ in range(2)]
    channels = [ListNotifier(name="ops"), ListNotifier(name="ops")]
    feeds = [PushFeed(), PushFeed()]
    a, b = [build_daemon(ha_settings(contract_config, tmp_path, name, 5.0), default_registry(), store=store,
                         feeds=[feed], notifiers=[(channel, None)])
            for name, store, channel, feed in zip("AB", stores, channels, feeds)]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(run_daemon(a, stops[0]))]
    try:
        await asyncio.wait_for(a.loaded.wait(), 10)
        tasks.append(asyncio.create_task(run_daemon(b, stops[1])))
        await asyncio.wait_for(b.loaded.wait(), 10)
        assert a.lease.leading and not b.lease.leading
        await asyncio.gather(*(f.connected.wait() for f in feeds))
        for feed, offset_ms in zip(feeds, (0, 250)):
            feed.push(*(PriceTick(t.symbol, t.price, t.ts_ms + offset_ms, t.bid, t.ask) for t in crash_ticks()))
        await channels[0].wait_for(lambda e: (e.level, e.kind) == ("warn", EventKind.FIRING))
        await wait_until(lambda: b.monitor.rules.depth.max() > 0)  # B saw the breach too
        await a.alerts.drain()
        await b.alerts.drain()
        assert channels[1].events == []  # the standby kept it to itself

        stops[0].set()  # A goes: B leads, and resolves what A notified
        assert await asyncio.wait_for(tasks[0], 10) == 0
        await wait_until(lambda: b.lease.leading, timeout=20)  # A released it: B takes it at its next renewal
        fired = {(e.account, e.level): e.ts_ms for e in channels[0].events if e.kind == EventKind.FIRING}
        feeds[1].push(*(PriceTick(s, p, 1_700_000_000_000 + 200 * 60_000, p, p)
                        for s, p in (("BTC/USDT", 60000.0), ("ETH/USDT", 3000.0))))
        resolved = await channels[1].wait_for(lambda e: e.kind == EventKind.RESOLVED)
        await b.alerts.drain()
        assert resolved.since_ms == fired[(resolved.account, resolved.level)]  # A's firing, not B's own
        again = [e for e in channels[1].events if e.kind == EventKind.FIRING and (e.account, e.level) in fired]
        assert again == []  # B never re-announced what A had notified
    finally:
        for s in stops:
            s.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in stores:
            await s.close()
