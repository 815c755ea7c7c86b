"""Binance classic cross margin end to end: the daemon, ccxt (unmodified) and a fake Binance on
loopback that checks every signature. Binance has no margin testnet, so orders run in live
mode against the local venue (rest_url re-roots every endpoint on loopback)."""

from __future__ import annotations

import asyncio
import random

import pytest

from monitor.accounts.synced import SyncApplier, Synced
from monitor.config import parse_settings
from monitor.core import Monitor
from monitor.errors import ConfigError
from monitor.exchange.binance import BinanceMarginGateway
from monitor.exchange.credentials import Credentials
from monitor.exchange.gateway import VenueRejected
from monitor.execution.exchange import client_order_id
from monitor.model import EventKind, Plan
from monitor.risk.portfolio import AccountBook, evaluate, to_native
from monitor.risk.solve import liquidation_price
from monitor.store.sqlite import MemoryStore
from strategies import default_registry
from tests.fake_venue.binance import FakeBinance
from tests.loopback import venue_on_loopback
from tests.test_exchange_bybit import Running, until

KEY, SECRET = "binance-test-key-01", "binance-test-secret-01"
ACCOUNT = "binance-margin"


ASSETS = {"BTC": {"price": "BTC/USDT"}, "USDT": {"price": 1.0}}


def settings_for(url: str, mode: str = "live", assets: dict | None = None, liquidation_level: float | None = 1.1,
                 **execution):
    level = {} if liquidation_level is None else {"liquidation_level": liquidation_level}
    return parse_settings({
        "daemon": {"restart_backoff_s": 0.01, "state_dir": "state-unused"},
        "execution": {"mode": mode, "order_timeout_s": 1.0, **execution},
        "assets": assets or ASSETS,
        "accounts": [{
            "name": ACCOUNT, "model": "margin_level", **level, "source": "binance",
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


def synced_book(settings, state, prices: dict[str, float]) -> AccountBook:
    """The book the daemon makes of a venue state at a sync (venue schedules, liquidation level,
    calibration), with the engine at `prices`: our figures from then on, with no further sync."""
    monitor = Monitor(settings, default_registry())
    for asset, price in prices.items():
        monitor.engine.apply(monitor.engine.asset_index[asset], price, 1)
    return SyncApplier(settings).book(monitor, Synced(settings.accounts[0].name, state))


async def fetch(gw, now_ms: int = 1) -> object:
    try:
        return await gw.fetch_state(now_ms)
    finally:
        await gw.close()


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
        assert "in collateral (ours 40000, the venue's 46000" in alert.detail  # the assets side differs
        assert "liabilities" not in alert.detail
        assert r.health() * 1.1 == pytest.approx(fake.margin_level(), rel=1e-4)  # health follows the venue


def test_binance_margin_has_no_testnet() -> None:
    raw = settings_for("http://127.0.0.1:1").model_dump(exclude_none=True)
    raw["accounts"][0]["testnet"] = True
    with pytest.raises(ConfigError, match="no margin endpoints"):
        parse_settings(raw)


async def test_binances_liquidation_price_example(venue) -> None:
    # Binance FAQ "How to Calculate Margin Liquidation Price?"
    # (https://www.binance.com/en/support/faq/f6b010588e55413aa58b7d63ee0125ed): cross margin
    # liquidates at margin level 1.1; User A has 10,000 USDT and borrows 20,000 USDT to buy 1 BTC
    # at 30,000, so holds 1 BTC against a 20,000 USDT debt: liquidation at 1.1 * 20,000 = 22,000.
    fake, url = venue
    fake.free, fake.borrowed, fake.book = {"BTC": 1.0, "USDT": 0.0}, {"USDT": 20_000.0}, {"BTCUSDT": (29_999, 30_001)}
    settings = settings_for(url, liquidation_level=None)  # the level the venue publishes (tradeCoeff)
    book = synced_book(settings, await fetch(gateway(url)), {"BTC": 30_000.0})
    assert book.param == 1.1 and book.exposures["USDT"].debt == 20_000.0
    assert liquidation_price(book, {"BTC": 30_000.0, "USDT": 1.0}, "BTC") == pytest.approx(22_000.0)


async def test_binances_example_of_a_coin_held_and_borrowed(venue) -> None:
    # The same FAQ: User C holds 100 USDT, borrows 0.4 ETH at 1,000 and places (unfilled) a sell of
    # the 0.4 ETH; with interest the liability is 0.40004 ETH, and liquidation comes at
    # 0.4 p + 100 = 1.1 * 0.40004 p (the page's own equation: the ETH held, in the open order, is an
    # asset and the ETH owed a liability, gross). p = 100 / 0.040044 = 2,497.25. (The page's
    # interest figure reads 0.00004 in one line and 0.0004 in the next; its equation uses 0.40004.)
    fake, url = venue
    fake.free, fake.locked = {"USDT": 100.0}, {"ETH": 0.4}
    fake.borrowed, fake.interest = {"ETH": 0.4}, {"ETH": 0.00004}
    fake.book["ETHUSDT"] = (999.5, 1000.5)
    settings = settings_for(url, assets={**ASSETS, "ETH": {"price": "ETH/USDT"}})
    prices = {"BTC": 40_000.0, "ETH": 1_000.0}
    state = await fetch(gateway(url))
    assert state.holdings == {"USDT": 100.0, "ETH": 0.4} and state.borrowed == {"ETH": pytest.approx(0.40004)}
    book = synced_book(settings, state, prices)
    assert book.exposures["ETH"].qty == 0.4 and book.exposures["ETH"].debt == pytest.approx(0.40004)
    assert liquidation_price(book, {**prices, "USDT": 1.0}, "ETH") == pytest.approx(100 / (1.1 * 0.40004 - 0.4))


async def test_the_venues_liquidation_bar_moves_the_levels_with_it(venue) -> None:
    # The account's forceLiquidationBar (GET /sapi/v1/margin/tradeCoeff), when the config sets none:
    # health is margin level / bar, and a level written as a margin level means that margin level.
    fake, url = venue
    fake.bars = (1.5, 1.3, 1.05)
    async with Running(settings_for(url, liquidation_level=None)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() == pytest.approx(fake.margin_level() / 1.05, rel=1e-6))
        assert r.d.monitor.engine.books[0].param == 1.05 and r.d.monitor.rules.accounts[0].param == 1.05
        r.feed.push(fake, 36000)  # margin level 1.2 < the act level's 1.25 (health 1.143 > 1.25 / 1.1)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        await r.resync()
        assert fake.margin_level() == pytest.approx(1.5, rel=0.02)  # the target, at the venue
        assert r.health() * 1.05 == pytest.approx(fake.margin_level(), rel=1e-3)


async def test_the_configs_liquidation_level_overrides_the_venues(venue) -> None:
    fake, url = venue
    fake.bars = (1.5, 1.3, 1.05)
    settings = settings_for(url, liquidation_level=1.1)
    book = synced_book(settings, await fetch(gateway(url)), {"BTC": 40_000.0})
    assert book.param == 1.1 and book.scale == pytest.approx(1 / 1.1)


async def test_a_cross_margin_pro_account_is_refused_with_the_reason(venue) -> None:
    fake, url = venue
    fake.account_type = "MARGIN_2"
    with pytest.raises(VenueRejected, match="Cross Margin Pro"):
        await fetch(gateway(url))


async def test_the_venues_totals_carry_what_we_do_not_price(venue) -> None:
    # 3 ETH in the account with no [assets] section: in Binance's total asset value (reported in
    # BTC, valued at its BTCUSDT margin price index), so the residual is their value on the asset side.
    fake, url = venue
    fake.free["ETH"], fake.book["ETHUSDT"] = 3.0, (1999, 2001)
    state = await fetch(gateway(url))
    assert state.totals.num == pytest.approx(40_000 + 6_000, rel=1e-6)
    assert state.totals.den == pytest.approx(30_000, rel=1e-6)
    book = synced_book(settings_for(url), state, {"BTC": 40_000.0})
    assert book.residual_num == pytest.approx(6_000, rel=1e-5) and book.residual_den == pytest.approx(0, abs=0.01)
    assert to_native("margin_level", book.param, evaluate(book, {"BTC": 40_000.0, "USDT": 1.0}).health) == \
        pytest.approx(fake.margin_level(), rel=1e-6)
    assert ("GET", "/sapi/v1/margin/priceIndex") in fake.requests


def random_account(fake: FakeBinance, rng: random.Random) -> None:
    """Held (free and in orders), borrowed (an asset may be both) and accrued interest, on BTC, ETH and USDT."""
    for sym, (lo, hi) in {"BTCUSDT": (20_000, 80_000), "ETHUSDT": (1_000, 4_000)}.items():
        mid = rng.uniform(lo, hi)
        fake.book[sym] = (mid - 0.5, mid + 0.5)
    fake.free = {a: rng.choice([0.0, rng.uniform(0, 80_000) / fake.price(a)]) for a in ("BTC", "ETH")}
    fake.free["USDT"] = rng.uniform(0, 50_000)
    fake.locked = {"BTC": rng.choice([0.0, rng.uniform(0, 0.5)])}
    owed = rng.sample(["BTC", "ETH", "USDT"], rng.randint(1, 3))
    share = rng.uniform(0.2, 0.85) * sum(fake.held(a) * fake.price(a) for a in ("BTC", "ETH", "USDT")) / len(owed)
    fake.borrowed = {a: share / fake.price(a) for a in owed}
    fake.interest = {a: x * rng.uniform(0, 0.01) for a, x in fake.borrowed.items()}


async def test_our_margin_level_tracks_binances_between_syncs(venue) -> None:
    # Random accounts, each synced once, then prices moved with no sync: the engine's margin level
    # (the synced book at the new prices) is the fake's own (Binance's rule) within 0.5%.
    fake, url = venue
    settings = settings_for(url, assets={**ASSETS, "ETH": {"price": "ETH/USDT"}}, liquidation_level=None)
    rng = random.Random(14)
    gw = gateway(url)
    try:
        for n in range(25):
            random_account(fake, rng)
            prices = {"BTC": fake.price("BTC"), "ETH": fake.price("ETH")}
            book = synced_book(settings, await gw.fetch_state(n + 1), prices)
            for _ in range(4):
                for sym in ("BTCUSDT", "ETHUSDT"):
                    mid = fake.price(sym[:-4]) * rng.uniform(0.7, 1.3)
                    fake.book[sym] = (mid - 0.5, mid + 0.5)
                moved = {"BTC": fake.price("BTC"), "ETH": fake.price("ETH"), "USDT": 1.0}
                ours = to_native("margin_level", book.param, evaluate(book, moved).health)
                assert ours == pytest.approx(fake.margin_level(), rel=0.005)
    finally:
        await gw.close()


async def test_the_liquidation_bar_is_read_once_an_hour(venue) -> None:
    from monitor.exchange.binance import REFRESH_MS

    fake, url = venue
    gw = gateway(url)
    try:
        states = [await gw.fetch_state(now) for now in (1, 2, REFRESH_MS, REFRESH_MS + 1)]
    finally:
        await gw.close()
    assert fake.requests.count(("GET", "/sapi/v1/margin/tradeCoeff")) == 2
    assert fake.requests.count(("GET", "/sapi/v1/margin/account")) == 4
    assert {s.liquidation_level for s in states} == {1.1}


async def test_a_venue_level_that_would_reorder_the_levels_is_declined(venue, capsys) -> None:
    # One level in health (1.2), one in margin level (1.3: health 1.18 at 1.1, 1.24 at 1.05): at the
    # venue's 1.05 they would swap places, so the book keeps the default and the log says why.
    fake, url = venue
    fake.bars = (1.5, 1.3, 1.05)
    raw = settings_for(url, liquidation_level=None).model_dump(exclude_none=True)
    raw["accounts"][0]["levels"] = [{"name": "near", "health": 1.2}, {"name": "far", "margin_level": 1.3}]
    book = synced_book(parse_settings(raw), await fetch(gateway(url)), {"BTC": 40_000.0})
    assert book.param == 1.1
    assert "change order at liquidation level 1.05" in capsys.readouterr().out
