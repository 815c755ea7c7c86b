"""Top-ups on a venue: the daemon, ccxt (unmodified) and the fake Bybit v5 account move
collateral from the FUND wallet into the unified account, idempotently by transfer id."""

from __future__ import annotations

import asyncio

import pytest

from monitor.exchange.bybit import BybitGateway
from monitor.exchange.credentials import Credentials
from monitor.exchange.gateway import VenueRejected
from monitor.execution.exchange import transfer_id
from monitor.model import EventKind, Plan, Transfer
from monitor.store.sqlite import MemoryStore
from tests.test_exchange_bybit import ACCOUNT, KEY, SECRET, Running, settings_for, until, venue  # noqa: F401

# MM rate at 34,000: 30000*0.05 / (0.95*34000 - 30000) = 65% (health 1.53); the top-up x that
# brings health to 2.5 solves (2300 + x) / (1500 - 0.05 x) = 2.5: x = 1288.89 USDT.
NEEDED = 1450 / 1.125


def top_up_settings(url: str, mode: str = "testnet", **account):
    s = settings_for(url, mode)
    acc = s.accounts[0].model_dump()
    acc.update(reserve_wallet="funding", **account)
    acc["levels"][0].update(strategy="top_up")
    raw = s.model_dump()
    raw["accounts"] = [acc]
    return type(s).model_validate(raw)


async def test_a_breach_tops_up_from_the_funding_wallet_in_testnet_mode(venue) -> None:  # noqa: F811
    fake, url = venue
    fake.funding = {"USDT": 20000.0}
    async with Running(top_up_settings(url)) as r:
        assert r.d.monitor.engine.books[0].reserve == {"USDT": 20000.0}  # read from the FUND wallet
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        r.feed.push(fake, 34000)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        (record,) = fake.transfers.values()
        assert float(record["amount"]) == pytest.approx(NEEDED, abs=0.01) and fake.orders == {}
        assert fake.funding["USDT"] == pytest.approx(20000 - NEEDED, abs=0.01)
        await r.resync()
        assert r.health() == pytest.approx(2.5, rel=1e-3)  # as the venue now reports the account
        assert r.d.monitor.engine.books[0].reserve["USDT"] == pytest.approx(fake.funding["USDT"])
        journal = await r.store.read_journal(ACCOUNT)
        assert journal[-1]["transfers"] == [{"asset": "USDT", "amount": pytest.approx(NEEDED, abs=0.01)}]
        assert not [e for e in r.notifier.events if e.kind in (EventKind.REJECTED, EventKind.VERIFY_FAILED)]
    assert fake.bad_signatures == 0


async def test_dry_run_tops_up_on_paper_on_top_of_the_venues_wallets(venue) -> None:  # noqa: F811
    fake, url = venue
    fake.funding = {"USDT": 20000.0}
    async with Running(top_up_settings(url, mode="dry_run")) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        r.feed.push(fake, 34000)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        await r.resync()  # the venue still has the old wallets; the paper top-up stays on top
        assert fake.transfers == {} and fake.funding == {"USDT": 20000.0}
        assert r.health() == pytest.approx(2.5, rel=1e-3)
        assert r.d.monitor.engine.books[0].reserve["USDT"] == pytest.approx(20000 - NEEDED, abs=0.01)


async def test_a_timeout_after_the_transfer_was_booked_leaves_exactly_one(venue) -> None:  # noqa: F811
    fake, url = venue
    fake.funding = {"USDT": 5000.0}
    fake.delay_transfer_s = 1.0  # booked at once, answered after the client gave up
    gw = BybitGateway(top_up_settings(url).accounts[0], Credentials(KEY, SECRET), timeout_s=0.3)
    try:
        tid = transfer_id("b" * 24, 0)
        assert await gw.top_up(tid, "USDT", 1000.0) == Transfer("USDT", 1000.0)
        assert await gw.top_up(tid, "USDT", 1000.0) == Transfer("USDT", 1000.0)  # a retry of the same leg
        assert list(fake.transfers) == [tid] and fake.funding["USDT"] == 4000.0
        assert fake.net("USDT") == -29000.0 and fake.spot_borrow["USDT"] == 30000.0  # the net, not the loan, moved
    finally:
        await gw.close()


async def test_restart_mid_top_up_is_reconciled_not_repeated(venue) -> None:  # noqa: F811
    fake, url = venue
    fake.funding = {"USDT": 20000.0}
    settings = top_up_settings(url)
    store = MemoryStore()
    # The process that died: it claimed a plan, its transfer reached the venue, nothing was recorded.
    plan = Plan(ACCOUNT, "act", "top_up", 1_700_000_000_000, 1.5, 2.5, transfers=(Transfer("USDT", 1500.0),))
    assert await store.claim_plan(plan.plan_id, ACCOUNT, plan.ts_ms)
    gw = BybitGateway(settings.accounts[0], Credentials(KEY, SECRET), 1.0)
    await gw.top_up(transfer_id(plan.plan_id, 0), "USDT", 1500.0)
    await gw.close()
    fake.book["BTCUSDT"] = (33995, 34005)
    async with Running(settings, store=store) as r:
        assert await store.open_plans() == []
        (rec,) = [j for j in await store.read_journal(ACCOUNT) if j["kind"] == "reconciled"]
        assert rec["plan_id"] == plan.plan_id and rec["transfers"] == [{"asset": "USDT", "amount": 1500.0}]
        r.feed.push(fake, 34000)  # the account already holds the top-up: above the level, nothing to do
        await until(lambda: r.health() > 2.5)
        assert r.d.plans.empty() and len(fake.transfers) == 1


async def test_a_refused_transfer_is_an_alert_with_bybits_reason(venue) -> None:  # noqa: F811
    fake, url = venue
    fake.funding = {"USDT": 20000.0}
    async with Running(top_up_settings(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        fake.funding["USDT"] = 10.0  # spent elsewhere since the last sync
        r.feed.push(fake, 34000)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        await r.d.alerts.drain()
        (rejected,) = [e for e in r.notifier.events if e.kind == EventKind.REJECTED]
        assert "Insufficient balance" in rejected.detail and fake.transfers == {}
        assert KEY not in rejected.detail and SECRET not in rejected.detail


async def test_a_venue_without_top_ups_refuses_them_plainly(venue) -> None:  # noqa: F811
    fake, url = venue
    gw = BybitGateway(settings_for(url).accounts[0], Credentials(KEY, SECRET), timeout_s=1.0)  # no reserve_wallet
    try:
        with pytest.raises(VenueRejected, match="no reserve_wallet"):
            await gw.top_up(transfer_id("c" * 24, 0), "USDT", 10.0)
    finally:
        await gw.close()
