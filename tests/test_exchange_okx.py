"""OKX multi-currency margin end to end: the daemon, ccxt (unmodified) and a fake OKX v5 on
loopback that checks every signature, the passphrase and the demo-trading header."""

from __future__ import annotations

import asyncio

import pytest

from monitor.config import parse_settings
from monitor.errors import ConfigError
from monitor.exchange.credentials import Credentials
from monitor.exchange.okx import OkxGateway
from monitor.exchange.venues import VenueState, okx_positions
from monitor.execution.exchange import client_order_id
from monitor.model import EventKind, Plan
from monitor.store.sqlite import MemoryStore
from tests.fake_venue.okx import FakeOkx
from tests.loopback import venue_on_loopback
from tests.test_exchange_bybit import Running, until

KEY, SECRET, PASSPHRASE = "okx-test-key-0001", "okx-test-secret-0001", "okx-test-passphrase-01"
ACCOUNT = "okx-main"
BOOK = "BTC-USDT"


def settings_for(url: str, mode: str = "testnet", **execution):
    return parse_settings({
        "daemon": {"restart_backoff_s": 0.01, "state_dir": "state-unused"},
        "execution": {"mode": mode, "order_timeout_s": 1.0, **execution},
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.95}, "USDT": {"price": 1.0}},
        "accounts": [{
            "name": ACCOUNT, "model": "unified", "source": "okx", "api_key_env": "OKX_API_KEY",
            "api_secret_env": "OKX_API_SECRET", "api_passphrase_env": "OKX_API_PASSPHRASE", "testnet": True,
            "rest_url": url, "ws_url": url.replace("http://", "ws://"), "sync_every_s": 30.0,
            "borrow_mmr": {"USDT": 0.05}, "drift_tolerance": 0.05,
            "levels": [{"name": "act", "mm_rate": 0.6, "action": "rebalance", "strategy": "sell_to_stable",
                        "target": 2.5, "cooldown_s": 0}],
        }],
    })


ENV = {"OKX_API_KEY": KEY, "OKX_API_SECRET": SECRET, "OKX_API_PASSPHRASE": PASSPHRASE}


def make_fake() -> FakeOkx:
    return FakeOkx(KEY, SECRET, PASSPHRASE, cash={"BTC": 1.0, "USDT": -30000.0}, book={BOOK: (39995, 40005)},
                   discount={"BTC": [(0.0, 0.95)]}, borrow_tiers={"USDT": [(1e9, 0.05)]})


@pytest.fixture
async def venue(monkeypatch):
    async with venue_on_loopback(make_fake(), ENV, monkeypatch) as served:
        yield served


def gateway(url: str, timeout_s: float = 1.0) -> OkxGateway:
    return OkxGateway(settings_for(url).accounts[0], Credentials(KEY, SECRET, PASSPHRASE), timeout_s, ("BTC/USDT",))


async def test_full_rebalance_cycle_on_demo_trading(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000, BOOK)
        await until(lambda: r.health() == pytest.approx(8000 / 1500))  # (0.95*40000 - 30000) / (0.05*30000)
        r.feed.push(fake, 34000, BOOK)  # MM rate 65% > 60%: sell BTC into USDT, which repays the loan
        await asyncio.wait_for(r.d.settled.wait(), 10)
        (cid, order), = fake.orders.items()
        assert cid.startswith("cm") and cid.isalnum() and len(cid) <= 32  # OKX's clOrdId rule
        assert order["side"] == "sell" and order["ordType"] == "ioc" and order["tdMode"] == "cross"
        assert float(order["px"]) <= 33995  # a marketable limit at the slippage cap
        await r.resync()
        assert 1 / fake.margin_ratio() == pytest.approx(0.4, rel=0.05)  # target 2.5 = MM rate 40%, at the venue
        assert r.health() == pytest.approx(fake.margin_ratio(), rel=1e-3)
        assert not [e for e in r.notifier.events if e.kind in (EventKind.REJECTED, EventKind.VERIFY_FAILED,
                                                               EventKind.DRIFT)]
    assert fake.bad_signatures == 0


async def test_partial_fill_is_reported_as_it_is(venue) -> None:
    fake, url = venue
    fake.fill_ratio = 0.5
    gw = gateway(url)
    try:
        order = await gw.place(client_order_id("d" * 24, 0), "BTC/USDT", "sell", 0.2, 39000.0)
        assert order.filled == pytest.approx(0.1) and order.status == "canceled" and order.final
        assert order.fee == pytest.approx(0.1 * 39995 * 0.001)
    finally:
        await gw.close()


async def test_restart_mid_plan_is_reconciled_from_the_order_history(venue) -> None:
    fake, url = venue
    settings = settings_for(url)
    store = MemoryStore()
    plan = Plan(ACCOUNT, "act", "sell_to_stable", 1_700_000_000_000, 1.5, 2.5)
    assert await store.claim_plan(plan.plan_id, ACCOUNT, plan.ts_ms)
    gw = gateway(url)
    await gw.place(client_order_id(plan.plan_id, 0), "BTC/USDT", "sell", 0.4, 33000.0)
    await gw.close()
    fake.book[BOOK] = (33995, 34005)
    async with Running(settings, store=store) as r:
        assert await store.open_plans() == []
        record = next(j for j in await store.read_journal(ACCOUNT) if j["kind"] == "reconciled")
        assert record["plan_id"] == plan.plan_id and record["fills"][0]["amount"] == pytest.approx(0.4)
        r.feed.push(fake, 34000, BOOK)  # the venue's balances already hold the sale: nothing to do
        await until(lambda: r.health() > 2)
        assert r.d.plans.empty() and len(fake.orders) == 1
        assert ("GET", "/api/v5/trade/orders-history") in fake.requests


async def test_the_venues_discount_tiers_override_the_config_in_coin_bands(venue) -> None:
    fake, url = venue
    fake.cash["USDT"] = -20000.0
    fake.discount["BTC"] = [(0.0, 1.0), (0.5, 0.5)]  # the first 0.5 BTC at 100%, the rest at 50%
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000, BOOK)
        await until(lambda: r.health() > 0)
        await r.resync()  # bands in BTC are valued at the price the engine has at the sync
        await until(lambda: r.health() == pytest.approx((20000 + 10000 - 20000) / 1000))
        await r.resync()
        assert r.health() == pytest.approx(fake.margin_ratio(), rel=1e-4)  # we agree with the venue
        assert not [e for e in r.notifier.events if e.kind == EventKind.DRIFT]


async def test_drift_when_the_venue_counts_collateral_we_do_not_price(venue) -> None:
    fake, url = venue
    fake.cash["ETH"], fake.book["ETH-USDT"] = 2.0, (1999, 2001)  # in OKX's margin ratio, not in our config
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000, BOOK)
        await until(lambda: r.health() > 5)
        await r.resync()
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.DRIFT)
        assert f"okx reports {1 / fake.margin_ratio():.4g}" in alert.detail


async def test_a_wrong_passphrase_is_refused_and_never_logged(venue, monkeypatch, capsys) -> None:
    fake, url = venue
    value = "not-the-passphrase-77"
    monkeypatch.setenv("OKX_API_PASSPHRASE", value)
    r = Running(settings_for(url))
    await r.until_sync_fails()
    assert fake.bad_signatures >= 1 and r.handle.syncs == 0
    out = capsys.readouterr()
    assert "account sync failed" in out.out + out.err
    for secret in (value, KEY, PASSPHRASE, SECRET):
        assert secret not in out.out + out.err


async def test_a_live_key_is_refused_by_demo_trading(venue) -> None:
    fake, url = venue
    fake.demo = False  # the key is a live one; the config says testnet
    gw = gateway(url)
    try:
        with pytest.raises(Exception, match="does not match current environment"):
            await gw.fetch_state(0)
    finally:
        await gw.close()


def test_okx_needs_the_passphrase_variable() -> None:
    raw = settings_for("http://127.0.0.1:1").model_dump(exclude_none=True)
    del raw["accounts"][0]["api_passphrase_env"]
    with pytest.raises(ConfigError, match="api_passphrase_env is needed"):
        parse_settings(raw)


def test_positions_are_read_in_base_units() -> None:
    # ccxt's parse of an OKX net-mode short of 250 contracts of 0.01 BTC (GET /api/v5/account/positions)
    raw = {"symbol": "BTC/USDT:USDT", "contracts": 250.0, "contractSize": 0.01, "side": "short",
           "info": {"instId": "BTC-USDT-SWAP", "pos": "-250", "avgPx": "40000", "mmr": "40", "notionalUsd": "100000"}}
    (p,) = okx_positions([raw])
    assert p.size == pytest.approx(-2.5) and p.entry == 40000 and p.mmr == pytest.approx(0.0004)


def streaming(fake) -> bool:
    return bool(fake.subscribers.get("account") and fake.subscribers.get("positions"))


async def test_the_account_channel_moves_health_between_syncs(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000, BOOK)
        await until(lambda: r.health() > 5 and streaming(fake))
        syncs = r.handle.syncs
        fake.cash["USDT"] += 5000  # a deposit
        await fake.push_account(["USDT"])  # an event: only the coin that changed
        await until(lambda: r.health() == pytest.approx((38000 - 25000) / 1250))
        assert r.handle.streamed >= 1 and r.handle.syncs == syncs  # no REST call needed
        assert r.d.monitor.engine.books[0].exposures["BTC"].qty == 1.0  # the coins not in the event stay
        assert not [e for e in r.notifier.events if e.kind == EventKind.DRIFT]  # the push's mgnRatio agrees


async def test_a_swap_position_arrives_on_the_positions_channel(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000, BOOK)
        await until(lambda: r.health() > 5 and streaming(fake))
        fake.swaps["BTC-USDT-SWAP"] = (-50, 40000.0)  # 50 contracts of 0.01 BTC, short
        await fake.push_positions(["BTC-USDT-SWAP"])
        await until(lambda: r.d.monitor.engine.books[0].exposures["BTC"].perp_size == pytest.approx(-0.5))
        fake.swaps["BTC-USDT-SWAP"] = (0, 0.0)  # closed
        await fake.push_positions(["BTC-USDT-SWAP"])
        await until(lambda: r.d.monitor.engine.books[0].exposures["BTC"].perp_size == 0)


async def test_a_bad_stream_login_is_refused_never_logged_and_retried(venue, capsys) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        await until(lambda: streaming(fake))
        fake.passphrase = "rotated-passphrase-42"  # REST synced already; the stream logs in after
        await fake.drop_streams()
        await until(lambda: r.handle.stream_failures >= 2)
        assert fake.bad_signatures >= 1 and not fake.subscribers.get("account")
        out = capsys.readouterr()
        logged = out.out + out.err
        assert "Login failed. (code 60009)" in logged  # OKX's answer to the login op
        # The fake leaves the connection open after a failed login, and ccxt logs in once per
        # connection: the gateway must dial again, or the stream would stay dead.
        fake.passphrase = PASSPHRASE
        await until(lambda: streaming(fake))
        fake.cash["USDT"] += 1000
        await fake.push_account(["USDT"])
        await until(lambda: r.d.monitor.engine.books[0].exposures["USDT"].debt == pytest.approx(29000))
    out = capsys.readouterr()
    for secret in (KEY, SECRET, PASSPHRASE, "rotated-passphrase-42"):
        assert secret not in logged + out.out + out.err


async def test_a_dropped_stream_reconnects_and_reconciles_first(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        await until(lambda: streaming(fake))
        syncs = r.handle.syncs
        await fake.drop_streams()
        await until(lambda: r.handle.stream_failures >= 1)
        # The break kicks a sync, which reconciles the account before it may trade again.
        await until(lambda: fake.stream_connections >= 2 and streaming(fake) and r.handle.syncs > syncs
                    and ACCOUNT in r.d.exchange.reconciled)
        r.feed.push(fake, 40000, BOOK)
        fake.cash["USDT"] += 1000
        await fake.push_account()
        await until(lambda: r.d.monitor.engine.books[0].exposures["USDT"].debt == pytest.approx(29000))


async def test_a_push_before_the_first_rest_sync_is_not_posted(venue) -> None:
    fake, url = venue
    fake.swaps["BTC-USDT-SWAP"] = (-50, 40000.0)
    fake.delay_balance_s = 0.5  # OKX's snapshots on subscribing come before the REST answer
    async with Running(settings_for(url)) as r:  # entered on the first state the engine applies
        assert r.handle.syncs == 1 and r.handle.streamed == 0  # that state is the REST sync's
        assert streaming(fake)  # the stream was up (its snapshots only folded into the gateway)
        assert r.d.monitor.engine.books[0].exposures["BTC"].perp_size == pytest.approx(-0.5)
        await fake.push_account()
        await until(lambda: r.handle.streamed >= 1)


async def watched(gw: OkxGateway, pred) -> VenueState:
    """The gateway's state after stream updates, once `pred` holds for it."""
    while not pred(state := await asyncio.wait_for(gw.watch_state(lambda: 0), 5)):
        pass
    return state


async def test_only_swaps_are_kept_from_the_positions_channel(venue) -> None:
    fake, url = venue
    gw = gateway(url)
    try:
        await gw.fetch_state(0)
        await watched(gw, lambda _: streaming(fake))
        fake.swaps["BTC-USDT-SWAP"] = (-50, 40000.0)
        margin = {**fake.position_item("BTC-USDT-SWAP"), "instId": "BTC-USDT", "instType": "MARGIN", "pos": "2"}
        await fake.publish("positions", [fake.position_item("BTC-USDT-SWAP"), margin])  # ccxt subscribed ANY
        state = await watched(gw, lambda s: s.positions)
        assert [(p.symbol, p.size) for p in state.positions] == [("BTC/USDT:USDT", pytest.approx(-0.5))]
    finally:
        await gw.close()


async def test_the_text_keepalive_keeps_the_stream_open(venue) -> None:
    fake, url = venue
    gw = gateway(url)
    gw._x.streaming["keepAlive"] = 50  # ms; ccxt drops a connection two keepalives without a "pong"
    try:
        await gw.fetch_state(0)
        await watched(gw, lambda _: streaming(fake))
        await until(lambda: fake.pings >= 6)
        assert fake.stream_connections == 1 and streaming(fake)
    finally:
        await gw.close()
