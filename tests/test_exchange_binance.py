"""Binance classic cross margin end to end: the daemon, ccxt (unmodified) and a fake Binance on
loopback that checks every signature. Binance has no margin testnet, so orders run in live
mode against the local venue (rest_url re-roots every endpoint on loopback)."""

from __future__ import annotations

import asyncio

import pytest

from monitor.config import parse_settings
from monitor.errors import ConfigError
from monitor.exchange.binance import BinanceMarginGateway
from monitor.exchange.credentials import Credentials
from monitor.execution.exchange import client_order_id
from monitor.model import EventKind, Plan
from monitor.store.sqlite import MemoryStore
from tests.fake_venue.binance import FakeBinance
from tests.loopback import venue_on_loopback
from tests.test_exchange_bybit import Running, until

KEY, SECRET = "binance-test-key-01", "binance-test-secret-01"
ACCOUNT = "binance-margin"


def settings_for(url: str, mode: str = "live", **execution):
    return parse_settings({
        "daemon": {"restart_backoff_s": 0.01, "state_dir": "state-unused"},
        "execution": {"mode": mode, "order_timeout_s": 1.0, **execution},
        "assets": {"BTC": {"price": "BTC/USDT"}, "USDT": {"price": 1.0}},
        "accounts": [{
            "name": ACCOUNT, "model": "margin_level", "liquidation_level": 1.1, "source": "binance",
            "api_key_env": "BINANCE_API_KEY", "api_secret_env": "BINANCE_API_SECRET", "rest_url": url,
            "sync_every_s": 30.0, "drift_tolerance": 0.05,
            "levels": [{"name": "act", "margin_level": 1.25, "action": "rebalance", "strategy": "repay_debt",
                        "target_margin_level": 1.5, "cooldown_s": 0}],
        }],
    })


ENV = {"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET}


def make_fake() -> FakeBinance:
    return FakeBinance(KEY, SECRET, free={"BTC": 1.0, "USDT": 0.0}, borrowed={"USDT": 30000.0},
                       book={"BTCUSDT": (39995, 40005)})


def gateway(url: str, timeout_s: float = 1.0) -> BinanceMarginGateway:
    return BinanceMarginGateway(settings_for(url).accounts[0], Credentials(KEY, SECRET), timeout_s, ("BTC/USDT",))


@pytest.fixture
async def venue(monkeypatch):
    async with venue_on_loopback(make_fake(), ENV, monkeypatch) as served:
        yield served



async def test_sale_and_repay_cycle_on_cross_margin(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() == pytest.approx(40000 / 30000 / 1.1))  # margin level 1.33 over 1.1
        r.feed.push(fake, 36000)  # margin level 1.2 < 1.25: sell BTC and repay the loan
        await asyncio.wait_for(r.d.settled.wait(), 10)
        (order,) = fake.orders.values()
        assert order["side"] == "SELL" and order["timeInForce"] == "IOC" and order["type"] == "LIMIT"
        assert fake.repays and fake.repays[0][0] == "USDT"
        await r.resync()
        assert fake.margin_level() == pytest.approx(1.5, rel=0.02)  # the target, at the venue
        assert r.health() * 1.1 == pytest.approx(fake.margin_level(), rel=1e-3)
        assert not [e for e in r.notifier.events if e.kind in (EventKind.REJECTED, EventKind.VERIFY_FAILED,
                                                               EventKind.DRIFT)]
    assert fake.bad_signatures == 0


async def test_restart_mid_plan_is_reconciled_from_all_orders(venue) -> None:
    fake, url = venue
    settings = settings_for(url)
    store = MemoryStore()
    plan = Plan(ACCOUNT, "act", "repay_debt", 1_700_000_000_000, 1.09, 1.36)
    assert await store.claim_plan(plan.plan_id, ACCOUNT, plan.ts_ms)
    gw = BinanceMarginGateway(settings.accounts[0], Credentials(KEY, SECRET), 1.0, ("BTC/USDT",))
    await gw.place(client_order_id(plan.plan_id, 0), "BTC/USDT", "sell", 0.2, 39000.0)
    await gw.close()
    async with Running(settings, store=store):
        assert await store.open_plans() == []
        record = next(j for j in await store.read_journal(ACCOUNT) if j["kind"] == "reconciled")
        assert record["plan_id"] == plan.plan_id and record["fills"][0]["amount"] == pytest.approx(0.2)
        assert ("GET", "/sapi/v1/margin/allOrders") in fake.requests and len(fake.orders) == 1


async def test_drift_when_the_venue_counts_assets_we_do_not_price(venue) -> None:
    fake, url = venue
    fake.free["ETH"], fake.book["ETHUSDT"] = 3.0, (1999, 2001)  # in the margin level, not in our config
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 1.2)
        await r.resync()
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.DRIFT)
        assert "binance reports 1.53" in alert.detail


def test_binance_margin_has_no_testnet() -> None:
    raw = settings_for("http://127.0.0.1:1").model_dump(exclude_none=True)
    raw["accounts"][0]["testnet"] = True
    with pytest.raises(ConfigError, match="no margin endpoints"):
        parse_settings(raw)
