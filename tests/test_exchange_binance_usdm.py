"""Binance USDⓈ-M futures in Multi-Assets mode end to end: the daemon, ccxt (unmodified) and a
fake futures testnet on loopback that checks every signature and pushes the user-data stream."""

from __future__ import annotations

import asyncio
import random

import pytest

from monitor.config import parse_settings
from monitor.errors import ConfigError
from monitor.exchange.binance_usdm import BinanceUsdmGateway
from monitor.exchange.credentials import Credentials
from monitor.exchange.gateway import VenueRejected
from monitor.execution.exchange import client_order_id
from monitor.core import Monitor, check_strategies
from monitor.model import EventKind, Plan
from monitor.store.sqlite import MemoryStore
from strategies import default_registry
from monitor.risk.portfolio import evaluate, maintenance_of, to_native
from monitor.risk.solve import liquidation_price
from monitor.risk.tiers import Tiers
from tests.fake_venue.binance_usdm import BTCUSDT_BRACKETS, FEE_RATE, FakeBinanceUsdm, with_amounts
from tests.loopback import venue_on_loopback
from tests.test_exchange_binance import fetch, synced_book
from tests.test_exchange_bybit import Running, until

KEY, SECRET = "usdm-test-key-0001", "usdm-test-secret-0001"
ACCOUNT = "binance-futures"
PERP = "BTC/USDT:USDT"


def account(url: str, **overrides) -> dict:
    return {"name": ACCOUNT, "model": "unified", "source": "binanceusdm", "api_key_env": "BINANCE_API_KEY",
            "api_secret_env": "BINANCE_API_SECRET", "testnet": True, "rest_url": url,
            "ws_url": url.replace("http://", "ws://"), "sync_every_s": 30.0, "drift_tolerance": 0.05,
            "levels": [{"name": "act", "mm_rate": 0.6, "action": "rebalance", "strategy": "reduce_position",
                        "target": 2.5, "cooldown_s": 0}], **overrides}


ASSETS = {"BTC": {"price": "BTC/USDT", "weight": 0.8}, "USDT": {"price": 1.0}}


def settings_for(url: str, mode: str = "testnet", assets: dict | None = None, **overrides):
    return parse_settings({
        "daemon": {"restart_backoff_s": 0.01, "state_dir": "state-unused"},
        "execution": {"mode": mode, "order_timeout_s": 1.0},
        "assets": assets or ASSETS,
        "accounts": [account(url, **overrides)],
    })


ENV = {"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET}
FLAT_5PCT = ((1_000_000_000, 0.05),)  # one bracket: 5% at any notional


def make_fake() -> FakeBinanceUsdm:
    """2000 USDT and 0.5 BTC of margin behind a 3 BTC long from 40000, 5% maintenance."""
    return FakeBinanceUsdm(KEY, SECRET, wallet={"USDT": 2000.0, "BTC": 0.5}, positions={"BTCUSDT": (3.0, 40000.0)},
                           book={"BTCUSDT": (39995, 40005)}, haircut={"BTC": 0.05},
                           brackets={"BTCUSDT": FLAT_5PCT})


@pytest.fixture
async def venue(monkeypatch):
    async with venue_on_loopback(make_fake(), ENV, monkeypatch) as served:
        yield served



def gateway(url: str, timeout_s: float = 1.0) -> BinanceUsdmGateway:
    return BinanceUsdmGateway(settings_for(url).accounts[0], Credentials(KEY, SECRET), timeout_s, ("BTC/USDT",))


async def test_full_cycle_on_the_futures_testnet_cuts_the_position(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() == pytest.approx(1 / fake.margin_ratio(), rel=1e-6))
        r.feed.push(fake, 36500)  # MM rate 62% > 60%: cut the long
        await asyncio.wait_for(r.d.settled.wait(), 10)
        (cid, order), = fake.orders.items()
        assert cid.startswith("cm") and order["side"] == "SELL" and order["reduceOnly"] is True
        assert order["timeInForce"] == "IOC" and order["type"] == "LIMIT" and float(order["price"]) <= 36495
        assert 0 < fake.positions["BTCUSDT"][0] < 3.0
        await r.resync()
        assert 1 / fake.margin_ratio() == pytest.approx(2.5, rel=0.05)  # the target (MM rate 40%), at the venue
        assert r.health() == pytest.approx(1 / fake.margin_ratio(), rel=1e-3)
        assert not [e for e in r.notifier.events if e.kind in (EventKind.REJECTED, EventKind.VERIFY_FAILED,
                                                               EventKind.DRIFT)]
    assert fake.bad_signatures == 0


async def test_the_venues_haircuts_override_the_config_weights(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        # 0.95 (Binance's bidBuffer 0.05), not the config's 0.8: 2000 + 0.5*40000*0.95 over 3*40000*5%
        await until(lambda: r.health() == pytest.approx((2000 + 19000) / 6000, rel=1e-3))
        assert r.d.monitor.engine.books[0].exposures["BTC"].perp_size == 3.0


async def test_the_user_data_stream_moves_health_between_syncs(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 3 and fake.streams)
        syncs, before = r.handle.syncs, r.health()
        fake.wallet["USDT"] += 3000  # a transfer in from the spot wallet
        await fake.push_account_update(["USDT"], [], reason="DEPOSIT")
        await until(lambda: r.health() == pytest.approx(before + 3000 / 6000, rel=1e-3))
        assert r.handle.streamed >= 1 and r.handle.syncs == syncs  # no REST call needed


async def test_a_position_opened_elsewhere_is_rated_from_the_brackets_at_once(venue) -> None:
    fake, url = venue
    fake.positions.clear()
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: fake.streams and r.handle.syncs >= 1)
        syncs, streamed = r.handle.syncs, r.handle.streamed
        fake.positions["BTCUSDT"] = (-1.0, 40000.0)  # a short opened by hand on the venue
        await fake.push_account_update([], ["BTCUSDT"])
        await until(lambda: r.handle.streamed > streamed and len(r.d.inbox) == 0)
        e = r.d.monitor.engine.books[0].exposures["BTC"]
        assert e.perp_size == -1.0 and e.perp_mm == pytest.approx(0.05)  # the symbol's bracket, read at the sync
        assert r.health() == pytest.approx(1 / fake.margin_ratio(), rel=1e-3)
        assert r.handle.syncs == syncs  # no REST call needed


async def test_a_dropped_stream_reconnects(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        await until(lambda: fake.streams)
        await fake.drop_streams()
        await until(lambda: r.handle.stream_failures >= 1)
        await until(lambda: fake.stream_connections >= 2 and fake.streams)
        r.feed.push(fake, 40000)
        fake.wallet["USDT"] += 1000
        await fake.push_account_update(["USDT"], [])
        await until(lambda: r.d.monitor.engine.books[0].exposures["USDT"].qty == pytest.approx(3000))


async def test_partial_fill_is_reported_as_it_is(venue) -> None:
    fake, url = venue
    fake.fill_ratio = 0.5
    gw = gateway(url)
    try:
        order = await gw.place(client_order_id("f" * 24, 0), PERP, "sell", 1.0, 39000.0)
        assert order.filled == pytest.approx(0.5) and order.status == "expired" and order.final
        assert order.fee == pytest.approx(0.5 * 39995 * FEE_RATE)  # not in the answer: the market's taker rate
        assert fake.positions["BTCUSDT"][0] == pytest.approx(2.5)
    finally:
        await gw.close()


async def test_restart_mid_plan_is_reconciled_from_all_orders(venue) -> None:
    fake, url = venue
    store = MemoryStore()
    plan = Plan(ACCOUNT, "act", "reduce_position", 1_700_000_000_000, 1.6, 2.5)
    assert await store.claim_plan(plan.plan_id, ACCOUNT, plan.ts_ms)
    gw = gateway(url)
    await gw.place(client_order_id(plan.plan_id, 0), PERP, "sell", 1.2, 36000.0)
    await gw.close()
    async with Running(settings_for(url), store=store) as r:
        assert await store.open_plans() == []
        record = next(j for j in await store.read_journal(ACCOUNT) if j["kind"] == "reconciled")
        assert record["plan_id"] == plan.plan_id and record["fills"][0]["amount"] == pytest.approx(1.2)
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 3)
        assert r.d.plans.empty() and len(fake.orders) == 1
        assert ("GET", "/fapi/v1/allOrders") in fake.requests


async def test_drift_when_the_venue_counts_margin_we_do_not_price(venue) -> None:
    fake, url = venue
    fake.wallet["ETH"], fake.book["ETHUSDT"] = 2.0, (1999, 2001)  # in Binance's margin ratio, not in our config
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000)
        await until(lambda: r.health() > 3)
        await r.resync()
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.DRIFT)
        assert f"binanceusdm reports {fake.margin_ratio():.4g}" in alert.detail


async def test_a_single_asset_mode_account_is_refused_with_the_fix(venue) -> None:
    fake, url = venue
    fake.multi_assets = False
    gw = gateway(url)
    try:
        with pytest.raises(VenueRejected, match="switch it to Multi-Assets mode"):
            await gw.fetch_state(0)
    finally:
        await gw.close()


def test_a_spot_strategy_is_refused_on_a_futures_account() -> None:
    settings = settings_for("http://127.0.0.1:1")
    raw = settings.model_dump(exclude_none=True)
    raw["accounts"][0]["levels"][0]["strategy"] = "sell_to_stable"
    with pytest.raises(ConfigError, match="binanceusdm trades perpetuals only"):
        check_strategies(Monitor(parse_settings(raw), default_registry()))


async def test_binances_maintenance_margin_examples(venue) -> None:
    # Binance FAQ "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts"
    # (https://www.binance.com/en/support/faq/b3c689c1f50a44cabb3a84e663b81d93), on BTCUSDT's
    # brackets: a 264,000 USDT position is at the 1% rate; the maintenance amount at 500,000 is 1,300
    # (= 250,000 * (1% - 0.5%) + 50); maintenance margin = notional * rate - maintenance amount
    # ("Leverage and Margin of USDⓈ-M Futures"): 500,000 * 1% - 1,300 = 3,700.
    fake, url = venue
    fake.brackets = {"BTCUSDT": BTCUSDT_BRACKETS}
    assert with_amounts(BTCUSDT_BRACKETS)[2] == (250_000, 1_000_000, 0.01, pytest.approx(1_300))
    fake.positions = {"BTCUSDT": (12.5, 40_000.0)}  # 500,000 at 40,000
    state = await fetch(gateway(url))
    (position,) = state.positions
    tiers = position.mmr
    assert isinstance(tiers, Tiers) and tiers.deductions[2] == pytest.approx(1_300)
    assert tiers.marginal(264_000) == 0.01 and tiers.apply(264_000) == pytest.approx(2_640 - 1_300)
    assert tiers.apply(500_000) == pytest.approx(3_700)
    book = synced_book(settings_for(url), state, {"BTC": 40_000.0})
    assert maintenance_of(book, "BTC", book.exposures["BTC"], 40_000.0) == pytest.approx(3_700)
    assert state.totals.den == pytest.approx(fake.maint_margin()) == pytest.approx(3_700)


async def test_the_liquidation_price_is_binances_formula(venue) -> None:
    # The same FAQ's one-way cross-margin formula for a single position:
    # LP = (WB + cum - side * size * entry) / (size * MMR - side * size), with the bracket of the
    # notional at LP. 10,000 USDT behind a 2 BTC long from 50,000 on BTCUSDT's brackets: the
    # 0.5% bracket (cum 50) holds at LP: (10,000 + 50 - 100,000) / (0.01 - 2) = 45,201.01.
    fake, url = venue
    fake.brackets, fake.haircut = {"BTCUSDT": BTCUSDT_BRACKETS}, {}
    fake.wallet, fake.positions, fake.book = {"USDT": 10_000.0}, {"BTCUSDT": (2.0, 50_000.0)}, {"BTCUSDT": (49_999, 50_001)}
    book = synced_book(settings_for(url), await fetch(gateway(url)), {"BTC": 50_000.0})
    lp = (10_000 + 50 - 2 * 50_000) / (2 * 0.005 - 2)
    assert 50_000 < 2 * lp <= 250_000  # the bracket assumed
    assert liquidation_price(book, {"BTC": 50_000.0, "USDT": 1.0}, "BTC") == pytest.approx(lp)


async def test_binances_multi_assets_margin_ratio_example(venue) -> None:
    # Binance FAQ "How to Calculate Margin Ratio in the Multi-Assets Mode" (https://www.binance.com/en/
    # support/faq/how-to-calculate-margin-in-multi-assets-mode-c983a9268cfa4e70a4916c276bb3b7bc):
    # USDTUSD index 0.99 (bid buffer 0.01, ask buffer 0.005), USDCUSD 1; 200 USDT and 220 USDC;
    # 0.5 BTCUSDT at 20,000 (MMR 0.8%) and 20 ETHUSDC at 600 (MMR 1%). Account equity
    # = 200 * 0.9801 + 220 = 416.02; maintenance = 80 * 0.99495 + 120 = 199.596; margin ratio 47.98%.
    fake, url = venue
    fake.stable_index, fake.haircut, fake.ask_buffer = {"USDT": 0.99}, {"USDT": 0.01, "USDC": 0.0}, {"USDT": 0.005}
    fake.brackets = {"BTCUSDT": ((1_000_000_000, 0.008),), "ETHUSDC": ((1_000_000_000, 0.01),)}
    fake.wallet = {"USDT": 200.0, "USDC": 220.0}
    fake.positions = {"BTCUSDT": (0.5, 20_000.0), "ETHUSDC": (20.0, 600.0)}
    fake.book = {"BTCUSDT": (19_999.5, 20_000.5), "ETHUSDT": (599.5, 600.5)}
    assert fake.margin_balance() == pytest.approx(416.02)
    assert fake.maint_margin() == pytest.approx(199.596)
    assert round(fake.margin_ratio(), 4) == 0.4798
    assets = {"BTC": {"price": "BTC/USDT"}, "ETH": {"price": "ETH/USDT"}, "USDT": {"price": 0.99},
              "USDC": {"price": 1.0}}
    state = await fetch(gateway(url))
    assert state.native == pytest.approx(199.596 / 416.02, rel=1e-6)
    book = synced_book(settings_for(url, assets=assets), state, {"BTC": 20_000.0, "ETH": 600.0})
    prices = {"BTC": 20_000.0, "ETH": 600.0, "USDT": 0.99, "USDC": 1.0}
    ours = evaluate(book, prices)
    assert to_native("unified", book.param, ours.health) == pytest.approx(199.596 / 416.02)  # calibrated
    assert ours.num - book.residual_num == pytest.approx(416.02)  # USDT at 0.99 less its 1% buffer
    # Our own model values the maintenance at the index, not Binance's ask rate: 200 vs 199.596.
    assert ours.den - book.residual_den == pytest.approx(200.0)


def random_futures_account(fake: FakeBinanceUsdm, rng: random.Random) -> None:
    """USDT (maybe owed) and BTC margin, a long or short on BTCUSDT's brackets, USDT's small buffers."""
    price = rng.uniform(20_000, 80_000)
    fake.book = {"BTCUSDT": (price - 0.5, price + 0.5)}
    size = round(rng.choice([-1, 1]) * rng.uniform(0.1, 40.0), 3)  # on the market's 0.001 step
    notional = abs(size) * price
    fake.positions = {"BTCUSDT": (size, price * rng.uniform(0.95, 1.05))}
    fake.wallet = {"USDT": notional * rng.uniform(-0.05, 0.3), "BTC": rng.choice([0.0, notional * rng.uniform(0, 0.2) / price])}
    fake.brackets = {"BTCUSDT": BTCUSDT_BRACKETS}
    fake.haircut, fake.ask_buffer = {"BTC": 0.05, "USDT": 0.0001}, {"USDT": 0.0002}


async def test_our_mm_rate_tracks_binances_between_syncs(venue) -> None:
    # Random accounts, each synced once, then the price moved with no sync: the engine's MM rate (the
    # synced book, its brackets as tiers, at the new price) is the fake's own margin ratio (Binance's
    # Multi-Assets rule) within 0.5%, wherever the fake's account is not liquidated.
    fake, url = venue
    rng = random.Random(14)
    gw = gateway(url)
    checked = 0
    try:
        for n in range(25):
            random_futures_account(fake, rng)
            if not 0 < fake.margin_ratio() < 1:
                continue
            book = synced_book(settings_for(url), await gw.fetch_state(n + 1), {"BTC": fake.price("BTC")})
            for _ in range(4):
                mid = fake.price("BTC") * rng.uniform(0.85, 1.15)
                fake.book["BTCUSDT"] = (mid - 0.5, mid + 0.5)
                if not 0 < fake.margin_ratio() < 1:
                    continue
                ours = to_native("unified", book.param, evaluate(book, {"BTC": mid, "USDT": 1.0}).health)
                assert ours == pytest.approx(fake.margin_ratio(), rel=0.005)
                checked += 1
    finally:
        await gw.close()
    assert checked >= 40


async def test_published_terms_are_read_once_an_hour(venue) -> None:
    from monitor.exchange.binance import REFRESH_MS

    fake, url = venue
    gw = gateway(url)
    try:
        for now in (1, 2, REFRESH_MS, REFRESH_MS + 1):
            await gw.fetch_state(now)
    finally:
        await gw.close()
    for path in ("/fapi/v1/leverageBracket", "/fapi/v1/assetIndex", "/fapi/v1/multiAssetsMargin"):
        assert fake.requests.count(("GET", path)) == 2, path
    assert fake.requests.count(("GET", "/fapi/v3/account")) == 4
