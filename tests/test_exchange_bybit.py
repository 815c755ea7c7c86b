"""Exchange-backed accounts end to end: the daemon, ccxt (unmodified) and a fake Bybit v5
unified account on loopback that checks every request's signature.

Each test waits on events (a sync landed, a plan settled, an alert arrived) with timeouts.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from monitor.config import parse_settings
from monitor.errors import ConfigError
from monitor.exchange.bybit import BybitGateway
from monitor.exchange.credentials import Credentials
from monitor.exchange.gateway import VenueRejected
from monitor.execution.exchange import ExchangeExecutor, client_order_id
from monitor.execution.paper import PaperExecutor
from monitor.execution.reconcile import reconcile_account
from monitor.model import EventKind, Order, Plan, PriceTick
from monitor.risk.portfolio import maintenance_of
from monitor.service import run_daemon
from monitor.store.sqlite import MemoryStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.fake_venue.bybit import FakeBybit, linear_position
from tests.loopback import venue_on_loopback
from tests.test_daemon import ListNotifier

KEY, SECRET = "test-api-key-0001", "test-api-secret-0001"
ACCOUNT = "bybit-main"


class PushFeed:
    """A live feed the test drives: ticks go out when pushed."""

    def __init__(self) -> None:
        self.name = "push"
        self.symbols = ("BTC/USDT",)
        self.queue: asyncio.Queue[PriceTick] = asyncio.Queue()

    def push(self, fake, price: float, book_key: str = "BTCUSDT") -> None:
        bid, ask = price - 5, price + 5
        fake.book[book_key] = (bid, ask)  # the venue trades where the feed says
        self.queue.put_nowait(PriceTick("BTC/USDT", price, time.time_ns() // 1_000_000, bid, ask))

    async def run(self, sink) -> None:
        while True:
            sink(await self.queue.get())


def settings_for(url: str, mode: str = "testnet", state_dir: str = "state-unused", **execution) -> object:
    return parse_settings({
        "daemon": {"restart_backoff_s": 0.01, "state_dir": state_dir},
        "execution": {"mode": mode, "order_timeout_s": 1.0, **execution},
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.95}, "USDT": {"price": 1.0}},
        "accounts": [{
            "name": ACCOUNT, "model": "unified", "source": "bybit", "api_key_env": "BYBIT_API_KEY",
            "api_secret_env": "BYBIT_API_SECRET", "testnet": True, "rest_url": url, "sync_every_s": 30.0,
            "ws_url": url.replace("http://", "ws://"),
            "borrow_mmr": {"USDT": 0.05}, "drift_tolerance": 0.1,
            "levels": [{"name": "act", "mm_rate": 0.6, "action": "rebalance", "strategy": "sell_to_stable",
                        "target": 2.5, "cooldown_s": 0}],
        }],
    })


ENV = {"BYBIT_API_KEY": KEY, "BYBIT_API_SECRET": SECRET}


def make_fake() -> FakeBybit:
    """1 BTC held, 30,000 USDT borrowed and spent: Bybit's 2025 form (walletBalance 0, spotBorrow 30,000)."""
    return FakeBybit(KEY, SECRET, wallet={"BTC": 1.0, "USDT": 0.0}, spot_borrow={"USDT": 30000.0},
                     book={"BTCUSDT": (39995, 40005)}, collateral_ratio={"BTC": 0.95}, borrow_mmr={"USDT": 0.05})


def gateway(url: str, timeout_s: float = 1.0) -> BybitGateway:
    return BybitGateway(settings_for(url).accounts[0], Credentials(KEY, SECRET), timeout_s, ("BTC/USDT",))


@pytest.fixture
async def venue(monkeypatch):
    async with venue_on_loopback(make_fake(), ENV, monkeypatch) as served:
        yield served


async def until(pred, timeout: float = 10.0) -> None:
    """Waits for a condition the daemon's tasks make true."""
    async def poll():
        while not pred():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


class Running:
    """A daemon on the fake venue, stopped cleanly at the end of the block. `--live` is given
    when the config says live; the account watched is the config's first."""

    def __init__(self, settings, store=None, live: bool | None = None, account: str | None = None):
        live = settings.execution.mode == "live" if live is None else live
        account = account or settings.accounts[0].name
        self.notifier = ListNotifier()
        self.feed = PushFeed()
        self.store = store or MemoryStore()
        self.d = build_daemon(settings, default_registry(), store=self.store, feeds=[self.feed],
                              notifiers=[(self.notifier, None)], live=live)
        self.handle = self.d.sync_handles[account]

    async def __aenter__(self):
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_daemon(self.d, self.stop))
        await asyncio.wait_for(self.handle.synced.wait(), 10)
        return self

    async def __aexit__(self, *exc):
        self.stop.set()
        assert await asyncio.wait_for(self.task, 10) == 0

    def health(self) -> float:
        return float(self.d.monitor.engine.health[0])

    async def until_sync_fails(self) -> None:
        """Runs the daemon until its first failed account sync, then stops it (a refused key)."""
        stop = asyncio.Event()
        task = asyncio.create_task(run_daemon(self.d, stop))
        await until(lambda: self.handle.failures >= 1)
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0

    async def resync(self) -> None:
        seen = self.handle.syncs
        self.handle.kick.set()
        await until(lambda: self.handle.syncs > seen and len(self.d.inbox) == 0)


async def test_full_rebalance_cycle_in_testnet_mode(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)  # synced holdings valued at the feed's price: 0.95*40000-30000 / 1500
        assert r.d.monitor.engine.books[0].exposures["USDT"].debt == pytest.approx(30000)
        r.feed.push(fake, 34000)  # MM rate 65% > 60%: act
        await asyncio.wait_for(r.d.settled.wait(), 10)
        assert len(fake.orders) == 1
        (link, order), = fake.orders.items()
        assert link.startswith("cm") and link.isalnum() and order["side"] == "Sell" and order["timeInForce"] == "IOC"
        assert order["orderType"] == "Limit" and float(order["price"]) <= 33995  # capped, marketable limit
        await r.resync()  # the venue's balances after the fill
        assert fake.wallet["BTC"] < 1.0
        assert r.health() == pytest.approx(2.5, rel=0.05)  # the target, as the venue now reports the account
        journal = await r.store.read_journal(ACCOUNT)
        assert journal[-1]["fills"][0]["amount"] == pytest.approx(1.0 - fake.wallet["BTC"])
        assert not [e for e in r.notifier.events if e.kind in (EventKind.REJECTED, EventKind.VERIFY_FAILED)]
    assert fake.bad_signatures == 0


async def test_dry_run_against_testnet_trades_on_paper(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url, mode="dry_run")) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        r.feed.push(fake, 34000)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        after = r.health()
        await r.resync()  # the venue still has the old balances; the paper ledger stays on top
        assert fake.orders == {} and fake.wallet["BTC"] == 1.0
        assert r.health() == pytest.approx(after) and after > 2.3
        fake.wallet["BTC"] = 0.1  # sold by hand at the venue: the paper sale no longer fits
        await r.resync()
        assert r.d.monitor.engine.books[0].exposures["BTC"].qty == pytest.approx(0.1)  # the venue wins


async def test_an_order_lost_before_the_venue_is_not_doubled_and_trading_resumes(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        fake.lose_next_create_s = 1.5  # longer than order_timeout_s: the client gives up, nothing was booked
        r.feed.push(fake, 34000)
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.REJECTED)
        assert "outcome unknown" in alert.detail and fake.orders == {}
        await r.resync()  # reconciled: no order carries the plan's id, so the account may trade again
        assert ACCOUNT in r.d.exchange.reconciled
        r.d.settled.clear()  # set by the lost order's settlement: wait for the next one
        r.feed.push(fake, 33990)
        await until(lambda: len(fake.orders) == 1)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        assert r.health() > 2


async def test_partial_fill_is_applied_and_not_resent(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        fake.fill_ratio = 0.5
        r.feed.push(fake, 34000)
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.REJECTED)
        assert "partial fill" in alert.detail
        await asyncio.wait_for(r.d.settled.wait(), 10)
        (order,) = fake.orders.values()
        assert order["orderStatus"] == "PartiallyFilledCanceled"
        journal = await r.store.read_journal(ACCOUNT)
        assert journal[-1]["fills"][0]["amount"] == pytest.approx(float(order["qty"]) * 0.5)
        # The remainder is planned again on fresh prices: a new plan, a new client id, never the old one resent.
        fake.fill_ratio = 1.0
        r.feed.push(fake, 33000)  # still short of the target after the half fill, and lower now
        await until(lambda: len(fake.orders) == 2)
        first, second = fake.orders
        assert first.rsplit("n", 1)[0] != second.rsplit("n", 1)[0]


async def test_restart_mid_plan_is_reconciled_not_repeated(venue) -> None:
    fake, url = venue
    settings = settings_for(url)
    store = MemoryStore()
    # The process that died: it claimed a plan and its order reached the venue, then nothing was recorded.
    plan = Plan(ACCOUNT, "act", "sell_to_stable", 1_700_000_000_000, 1.5, 2.5)
    assert await store.claim_plan(plan.plan_id, ACCOUNT, plan.ts_ms)
    gw = BybitGateway(settings.accounts[0], Credentials(KEY, SECRET), 1.0)
    await gw.place(client_order_id(plan.plan_id, 0), "BTC/USDT", "sell", 0.4, 33000.0)
    await gw.close()
    fake.book["BTCUSDT"] = (33995, 34005)
    async with Running(settings, store=store) as r:
        assert await store.open_plans() == []
        reconciled = [j for j in await store.read_journal(ACCOUNT) if j["kind"] == "reconciled"]
        assert reconciled[0]["plan_id"] == plan.plan_id and reconciled[0]["fills"][0]["amount"] == pytest.approx(0.4)
        r.feed.push(fake, 34000)  # the venue's balances already hold the sale: healthy, nothing to do
        await until(lambda: r.health() > 2)
        assert r.d.plans.empty() and len(fake.orders) == 1


async def test_outcome_hidden_by_an_outage_is_reconciled_on_reconnect(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        fake.delay_create_s, fake.down_after_create = 1.5, True  # booked; the answer and every lookup lost
        r.feed.push(fake, 34000)
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.REJECTED)
        assert "outcome unknown" in alert.detail
        assert ACCOUNT not in r.d.exchange.reconciled  # no new order on this account until reconciled
        fake.down = False
        await r.resync()
        assert ACCOUNT in r.d.exchange.reconciled
        (link,) = fake.orders
        record = next(j for j in await r.store.read_journal(ACCOUNT) if j["kind"] == "reconciled")
        assert link.startswith(record["client_id_prefix"])
        assert record["fills"][0]["amount"] == pytest.approx(float(fake.orders[link]["cumExecQty"]))
        assert r.d.monitor.engine.books[0].exposures["BTC"].qty == pytest.approx(fake.wallet["BTC"])


async def test_legs_journaled_before_an_outage_are_not_counted_again_when_reconciled(venue) -> None:
    fake, url = venue
    gw = BybitGateway(settings_for(url).accounts[0], Credentials(KEY, SECRET), timeout_s=0.5)
    ex = ExchangeExecutor({ACCOUNT: gw}, lambda: time.time_ns() // 1_000_000)
    ex.bind(PaperExecutor(lambda _a: None, 0.001, 0.0, lambda: 0), lambda _p: None, lambda o: o.price)
    ex.reconciled.add(ACCOUNT)
    store = MemoryStore()
    sale = Order("BTC/USDT", "sell", 0.1, 39000.0, "BTC", "USDT")
    plan = Plan(ACCOUNT, "act", "sell_to_stable", 1, 1.5, 2.5, orders=(sale, sale))

    async def lose_leg_1() -> None:  # leg 0 goes through; leg 1's request dies on the way
        await fake.created.wait()
        fake.lose_next_create_s = 1.0  # longer than the client's timeout
    loser = asyncio.create_task(lose_leg_1())
    try:
        done = await ex.execute(plan)
        assert [f.amount for f in done.fills] == [pytest.approx(0.1)] and "outcome unknown" in done.errors[0]
        assert ACCOUNT not in ex.reconciled and loser.done()
        assert await reconcile_account(ex, store, ACCOUNT, lambda: 0) == 1
        (record,) = await store.read_journal(ACCOUNT)
        assert record["kind"] == "reconciled" and record["fills"] == []  # leg 0 was journaled with the plan
        assert ACCOUNT in ex.reconciled and len(fake.orders) == 1
    finally:
        await gw.close()


async def test_a_balance_change_arrives_on_the_private_stream(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5 and fake.subscribers.get("wallet"))
        syncs = r.handle.syncs
        fake.wallet["USDT"] += 10000  # a transfer in pays part of the loan: Bybit pushes the wallet
        await fake.push_wallet()
        await until(lambda: r.d.monitor.engine.books[0].exposures["USDT"].debt == pytest.approx(20000))
        assert r.handle.streamed >= 1 and r.handle.syncs == syncs  # no REST call needed


async def test_positions_arrive_on_the_position_stream_and_on_rest(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5 and fake.subscribers.get("position") and fake.subscribers.get("wallet"))
        syncs = r.handle.syncs
        before = r.health()
        fake.positions = [linear_position("Buy", 0.5, 39000)]  # opened by hand
        await fake.push_positions()
        book = lambda: r.d.monitor.engine.books[0]  # noqa: E731
        btc = lambda: book().exposures["BTC"]  # noqa: E731
        await until(lambda: btc().perp_size == 0.5)
        assert btc().perp_cost == pytest.approx(0.5 * 39000) and r.health() != before  # counted at once
        # A new symbol: its risk limits come with a REST sync, taken at once.
        await until(lambda: r.handle.syncs > syncs and "BTC" in book().perp_tiers)
        assert ("GET", "/v5/market/risk-limit") in fake.requests
        assert maintenance_of(book(), "BTC", btc(), 40000) == pytest.approx(0.5 * 40000 * 0.005)  # tier 1
        fake.wallet["USDT"] += 1000  # a wallet update keeps the position
        await fake.push_wallet()
        await until(lambda: r.d.monitor.engine.books[0].exposures["USDT"].debt == pytest.approx(29000))
        assert btc().perp_size == 0.5
        fake.positions = [linear_position("", 0, 0)]  # closed: Bybit sends size 0
        await fake.push_positions()
        await until(lambda: btc().perp_size == 0)
        fake.positions = [linear_position("Sell", 0.2, 41000)]
        await r.resync()  # the REST sync reads the same positions
        assert btc().perp_size == -0.2


async def test_a_dropped_stream_reconnects_and_reconciles_first(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        await until(lambda: fake.subscribers.get("wallet"))
        assert ACCOUNT in r.d.exchange.reconciled
        await fake.drop_streams()
        await until(lambda: r.handle.stream_failures >= 1)
        await until(lambda: fake.stream_connections >= 2 and fake.subscribers.get("wallet")
                    and ACCOUNT in r.d.exchange.reconciled)
        fake.wallet["BTC"] = 1.5
        await fake.push_wallet()  # the new connection carries updates
        await until(lambda: r.d.monitor.engine.books[0].exposures["BTC"].qty == 1.5)


@pytest.mark.parametrize(("caps", "message"), [
    ({"max_notional_per_action": 5000.0}, "global cap per action"),
    ({"max_notional_per_day": 10000.0}, "global daily cap (6000.00 traded"),
])
async def test_global_notional_caps_hold_plans_back(venue, caps, message) -> None:
    fake, url = venue
    store = MemoryStore()
    now = time.time_ns() // 1_000_000  # traded earlier today, before a restart
    await store.journal("execution", "other", now, {"fills": [{"symbol": "ETH/USDT", "side": "sell", "amount": 2.0,
                                                               "price": 3000.0, "fee": 6.0}]})
    async with Running(settings_for(url, **caps), store=store) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        r.feed.push(fake, 34000)  # the plan sells about 8400 USDT of BTC
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.REJECTED)
        assert message in alert.detail and fake.orders == {}


async def test_kill_switch_stops_orders_while_monitoring_goes_on(venue, tmp_path) -> None:
    fake, url = venue
    (tmp_path / "KILL").touch()  # the kill file in the state directory
    async with Running(settings_for(url, state_dir=str(tmp_path))) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        r.feed.push(fake, 34000)
        await r.notifier.wait_for(lambda e: e.level == "act" and e.kind == EventKind.FIRING)  # alerting goes on
        await until(lambda: r.d.plans.empty() and not r.d.monitor.rules.state[0].in_flight)
        assert fake.orders == {} and await r.store.open_plans() == []
        (tmp_path / "KILL").unlink()  # released: the next breach trades
        r.feed.push(fake, 33990)
        await until(lambda: len(fake.orders) == 1)


async def test_drift_alert_when_the_venue_disagrees(venue) -> None:
    fake, url = venue
    fake.borrow_mmr["USDT"] = 0.10  # the venue's maintenance rate on the loan is twice the config's...
    fake.publish_borrow_tiers = False  # ...and not published: our model has only the config's
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 2)
        await r.resync()
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.DRIFT)
        assert alert.level == "drift" and "bybit reports 0.375" in alert.detail
        assert "in maintenance (ours 1500, the venue's 3000)" in alert.detail  # the part that disagrees
        assert alert.native == pytest.approx(1500 / 8000, rel=1e-3)
        assert 1 / r.health() == pytest.approx(0.375, rel=1e-3)  # health follows the venue through the residual
        await r.resync()  # still apart: told once, not on every sync
        assert sum(e.kind == EventKind.DRIFT for e in r.notifier.events) == 1


async def test_the_venues_loan_tiers_override_the_config(venue) -> None:
    fake, url = venue
    fake.borrow_mmr["USDT"] = [(20000.0, 0.05), (1e9, 0.15)]  # published; the config says 0.05 flat
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 2)
        await r.resync()
        assert 1 / r.health() == pytest.approx((1000 + 1500) / 8000, rel=1e-4)  # 20,000 at 5%, 10,000 at 15%
        assert 1 / r.health() == pytest.approx(fake.mm_rate(), rel=1e-4)
        assert ("GET", "/v5/spot-margin-trade/position-tiers") in fake.requests
        assert not [e for e in r.notifier.events if e.kind == EventKind.DRIFT]


async def test_the_venues_collateral_ratios_override_the_config(venue) -> None:
    fake, url = venue
    fake.collateral_ratio["BTC"] = 0.85  # published by the venue; the config says 0.95
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        # One flat ratio needs no price to value it: in force from the first sync.
        await until(lambda: r.health() == pytest.approx(4000 / 1500))  # (0.85 * 40000 - 30000) / 1500
        await r.resync()
        assert 1 / r.health() == pytest.approx(fake.mm_rate(), rel=1e-4)  # we now agree with the venue
        assert not [e for e in r.notifier.events if e.kind == EventKind.DRIFT]
        assert ("GET", "/v5/spot-margin-trade/collateral") in fake.requests


async def test_agreeing_venue_raises_no_drift(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        await r.resync()
        assert not [e for e in r.notifier.events if e.kind == EventKind.DRIFT]


async def test_order_rounding_and_minimums(venue) -> None:
    fake, url = venue
    gw = BybitGateway(settings_for(url).accounts[0], Credentials(KEY, SECRET), 1.0)
    try:
        with pytest.raises(VenueRejected, match="minimum"):
            await gw.rounded("BTC/USDT", 0.00001, 40000.0)
        assert await gw.rounded("BTC/USDT", 0.12345678, 40000.123) == (0.123456, 40000.12)
    finally:
        await gw.close()
    assert fake.orders == {}


async def test_live_mode_with_the_flag_trades_and_says_so_loudly(venue, capsys) -> None:
    fake, url = venue
    raw = settings_for(url, mode="live").model_dump(exclude_none=True)
    raw["accounts"][0]["testnet"] = False  # live endpoints, re-rooted on the local venue by rest_url / ws_url
    async with Running(parse_settings(raw), live=True) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        r.feed.push(fake, 34000)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        assert len(fake.orders) == 1
    out = capsys.readouterr().out
    assert "LIVE TRADING" in out and "REAL MONEY" in out


def test_live_needs_the_flag_and_the_config(venue) -> None:
    fake, url = venue
    raw = settings_for(url, mode="live").model_dump(exclude_none=True)
    raw["accounts"][0]["testnet"] = False
    live = parse_settings(raw)
    with pytest.raises(ConfigError, match="--live"):
        build_daemon(live, default_registry(), store=MemoryStore(), feeds=[PushFeed()])
    with pytest.raises(ConfigError, match="--live"):
        build_daemon(settings_for(url), default_registry(), store=MemoryStore(), feeds=[PushFeed()], live=True)
    with pytest.raises(ConfigError, match="testnet = true"):
        build_daemon(settings_for(url, mode="live"), default_registry(), store=MemoryStore(), feeds=[PushFeed()],
                     live=True)


async def test_a_reload_keeps_synced_holdings_and_trading_on_the_venue(venue) -> None:
    from monitor.reload import Reconfigure, check_reloadable

    fake, url = venue
    settings = settings_for(url)
    async with Running(settings) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 5)
        raw = settings.model_dump(exclude_none=True)
        raw["accounts"][0]["levels"][0]["mm_rate"] = 0.55  # an edited level: the account's config changed
        message = Reconfigure(parse_settings(raw), default_registry(), lambda s: [(r.notifier, None)])
        r.d.inbox.put_control(message)
        assert await asyncio.wait_for(message.done, 10) is None
        assert r.d.monitor.engine.books[0].exposures["USDT"].debt == pytest.approx(30000)  # not the config's (none)
        r.feed.push(fake, 34000)  # MM rate 65%: act
        await until(lambda: len(fake.orders) == 1)  # still the venue's executor, not paper
    raw["accounts"][0]["rest_url"] = "http://127.0.0.1:1"
    with pytest.raises(ConfigError, match="need a restart"):
        check_reloadable(settings, parse_settings(raw))
