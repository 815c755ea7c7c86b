"""Bybit's own risk, as the venue counts it (issue 14): liabilities (walletBalance - spotBorrow),
tiered collateral by coin quantity, loan maintenance tiers, perpetual risk limits, the account's
totals; the venues' worked examples; the fake's MM rate against ours at prices between syncs.

The fake (tests/fake_venue/bybit.py) computes its figures from its own rules, not from monitor/.
"""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import orjson
import pytest

from monitor.accounts.synced import Synced, SyncApplier
from monitor.cli_state import gather_status
from monitor.config import parse_settings
from monitor.exchange.bybit import SCHEDULES_EVERY_MS, BybitGateway
from monitor.exchange.credentials import Credentials
from monitor.exchange.gateway import build_exchange
from monitor.exchange.venues import bybit_borrow_tiers, bybit_risk_limit_tiers, bybit_totals, bybit_unified_state
from monitor.http.status import snapshot
from monitor.model import EventKind, wall_clock_ms
from monitor.risk.portfolio import evaluate, maintenance_of, to_native
from monitor.risk.solve import liquidation_price
from tests.fake_venue.bybit import FakeBybit, linear_position, position_mm, risk_limit_rows
from tests.loopback import venue_on_loopback
from tests.test_exchange_bybit import ENV, KEY, SECRET, Running, settings_for, until

# Bybit's XYZUSDT illustration (help centre "Maintenance Margin (USDT Contract)",
# https://www.bybit.com/en/help-center/article/Maintenance-Margin-USDT-Contract): risk-limit tiers
# by position value, each excess at the next tier's rate.
XYZ = [(1000.0, 0.02), (2000.0, 0.025), (3000.0, 0.03), (4000.0, 0.035), (5000.0, 0.04)]
# Tiered collateral value ratios by quantity (help centre "Understanding Collateral Value Ratios",
# https://www.bybit.com/en/help-center/article/Assets-Collateral-Value-Ratio-List-UTA).
BTC_BANDS = [(0.0, 0.98), (10.0, 0.95), (20.0, 0.9), (30.0, 0.85), (40.0, 0.8), (50.0, 0.0)]


def coin(name: str, wallet: float, spot_borrow: str | None, upl: float = 0.0, price: float = 1.0, **extra) -> dict:
    """A wallet-balance coin item (API docs "Get Wallet Balance"); spot_borrow None: the field absent."""
    item = {"coin": name, "walletBalance": f"{wallet}", "unrealisedPnl": f"{upl}", "accruedInterest": "0",
            "equity": f"{wallet - float(spot_borrow or 0) + upl}",
            "usdValue": f"{(wallet - float(spot_borrow or 0) + upl) * price}", **extra}
    if spot_borrow is not None:
        item["spotBorrow"] = spot_borrow
    return item


# -- liabilities: both of Bybit's forms, nothing counted twice -------------------------------------
@pytest.mark.parametrize(("item", "net"), [
    (coin("USDT", -900000.0, None, borrowAmount="900000"), -900000.0),  # before 2025: a negative balance
    (coin("USDT", 0.0, "900000", borrowAmount="900000"), -900000.0),  # 2025: credited, then spent
    (coin("USDT", 900000.0, "900000", borrowAmount="900000"), 0.0),  # borrowed and still held
    (coin("USDT", -500.0, "1000", borrowAmount="1500"), -1500.0),  # a derivatives loss beside a spot loan
    (coin("USDT", 0.0, "1000.5", borrowAmount="1000.5", accruedInterest="0.5"), -1000.5),  # interest is in the loan
])
def test_a_coins_liability_is_its_wallet_balance_less_spot_borrow(item, net) -> None:
    state = bybit_unified_state({"coin": [coin("BTC", 25.0, "0"), item]}, [], 0)
    assert state.holdings.get("USDT", 0.0) == net and state.holdings["BTC"] == 25.0 and state.borrowed == {}


def test_the_accounts_totals_name_their_parts() -> None:
    wallet = {"totalMarginBalance": "530000", "totalMaintenanceMargin": "47000", "totalPerpUPL": "2000",
              "coin": [coin("BTC", 25.0, "0", price=60000.0), coin("USDT", 0.0, "900000", upl=2000.0)]}
    totals = bybit_totals(wallet)
    assert (totals.num, totals.den) == (530000.0, 47000.0)
    assert totals.parts == {"maintenance": 47000.0, "pnl": 2000.0, "liabilities": 900000.0,
                            "collateral": 530000.0 - 2000.0 + 900000.0}
    assert bybit_totals({"totalMarginBalance": "", "coin": []}) is None  # no account-wide sums: none


# -- maintenance: Bybit's published schedules -----------------------------------------------------
def test_xyzusdt_short_of_100_contracts_at_45_has_mm_130() -> None:
    """The help centre's example: 4,500 USDT of position value = 1,000 x 2% + 1,000 x 2.5% +
    1,000 x 3% + 1,000 x 3.5% + 500 x 4% = 130."""
    rows = risk_limit_rows("XYZUSDT", XYZ)
    assert [r["mmDeduction"] for r in rows] == ["", "5", "15", "30", "50"]  # the fake's, as Bybit would publish
    published = bybit_risk_limit_tiers(rows)["XYZUSDT"]
    assert published.value(100, 45) == pytest.approx(130.0, abs=1e-9)
    assert position_mm(100 * 45, XYZ)[0] == pytest.approx(130.0, abs=1e-9)  # the fake's own rule agrees
    unpublished = bybit_risk_limit_tiers([{**r, "mmDeduction": ""} for r in rows])["XYZUSDT"]
    assert unpublished.value(100, 45) == pytest.approx(130.0, abs=1e-9)  # no deductions: band by band
    percent = [{**r, "maintenanceMargin": f"{float(r['maintenanceMargin']) * 100:g}",
                "initialMargin": f"{float(r['initialMargin']) * 100:g}"} for r in rows]  # the docs' example's form
    assert bybit_risk_limit_tiers(percent)["XYZUSDT"].value(100, 45) == pytest.approx(130.0, abs=1e-9)


async def test_xyzusdt_short_synced_from_the_venue_is_rated_by_its_risk_limits(monkeypatch) -> None:
    fake = FakeBybit(KEY, SECRET, wallet={"USDT": 1000.0}, book={"BTCUSDT": (44.99, 45.01)},
                     risk_limits={"BTCUSDT": XYZ}, positions=[linear_position("Sell", 100, 45)])
    async with venue_on_loopback(fake, ENV, monkeypatch) as (_, url):
        gw = BybitGateway(settings_for(url).accounts[0], Credentials(KEY, SECRET), 1.0)
        try:
            state = await gw.fetch_state(0)
        finally:
            await gw.close()
    book = SyncApplier(settings_for(url)).book(at_prices({"BTC": 45.0, "USDT": 1.0}), Synced("bybit-main", state))
    assert maintenance_of(book, "BTC", book.exposures["BTC"], 45.0) == pytest.approx(130.0, abs=1e-6)
    assert float(fake.position_items()[0]["positionMM"]) == pytest.approx(130.0)
    assert ("GET", "/v5/market/risk-limit") in fake.requests


def test_loan_maintenance_tiers_are_by_borrowed_quantity() -> None:
    """GET /v5/spot-margin-trade/position-tiers: the docs' example (BTC, borrowLimit 390..393 at
    positionMMR 0.04) and a progressive schedule (borrowLimit is each tier's accumulated bound)."""
    docs = {"list": [{"currency": "BTC", "positionTiersRatioList": [
        {"tier": str(i + 1), "borrowLimit": str(390 + i), "positionMMR": "0.04", "positionIMR": "0.2",
         "maxLeverage": "5"} for i in range(4)]}]}
    btc = bybit_borrow_tiers(docs)["BTC"]
    assert btc.unit == "qty" and btc.value(391.5, 50000.0) == pytest.approx(0.04 * 391.5 * 50000.0)
    two = {"list": [{"currency": "USDT", "positionTiersRatioList": [
        {"tier": "1", "borrowLimit": "500000", "positionMMR": "0.04"},
        {"tier": "2", "borrowLimit": "2000000", "positionMMR": "0.07"}]}]}
    assert bybit_borrow_tiers(two)["USDT"].value(900000.0, 1.0) == pytest.approx(500000 * 0.04 + 400000 * 0.07)


# -- the issue's accounts, end to end ----------------------------------------------------------------
def at_prices(prices: dict[str, float]) -> SimpleNamespace:
    """What SyncApplier reads from the engine loop: the prices the sync is calibrated at."""
    return SimpleNamespace(engine=SimpleNamespace(price_map=lambda: dict(prices)), schedules={})


@pytest.fixture
async def issue_venue(monkeypatch):
    """25 BTC held against 900,000 USDT borrowed and spent (Bybit's 2025 form: walletBalance 0,
    spotBorrow 900,000); loan tiers 4% to 500,000 and 7% beyond: at 60,000 the margin balance is
    600,000 and the maintenance 48,000, an MM rate of 8%."""
    fake = FakeBybit(KEY, SECRET, wallet={"BTC": 25.0, "USDT": 0.0}, spot_borrow={"USDT": 900000.0},
                     book={"BTCUSDT": (59995, 60005)}, collateral_ratio={"BTC": 1.0, "USDT": 1.0},
                     borrow_mmr={"USDT": [(500000.0, 0.04), (5e6, 0.07)]})
    async with venue_on_loopback(fake, ENV, monkeypatch) as served:
        yield served


async def test_issue_14_a_borrowed_usdt_counts_as_the_venue_counts_it(issue_venue) -> None:
    """Issue 14: the daemon showed health inf (MM rate 0%, equity 1,500,000) while Bybit reported 8%."""
    fake, url = issue_venue
    assert fake.mm_rate() == pytest.approx(0.08)
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 60000)
        await until(lambda: r.d.monitor.engine.price_map()["BTC"] == 60000)
        await r.resync()
        row = snapshot(r.d, 10)["accounts"][0]
        assert row["native"] == pytest.approx(0.08, rel=1e-6) and row["equity"] == pytest.approx(600000.0)
        assert r.d.monitor.engine.books[0].exposures["USDT"].debt == pytest.approx(900000.0)
        assert r.d.sync.calibration["bybit-main"].view()["residual"] == {"num": 0.0, "den": 0.0}  # all attributed
        assert not [e for e in r.notifier.events if e.kind == EventKind.DRIFT]


@pytest.fixture
async def tiered_venue(monkeypatch):
    """Issue 14's collateral example: 25 BTC in bands 0-10 @ 0.98, 10-20 @ 0.95, 20-30 @ 0.9, and
    1,000,000 USDT borrowed at a loan MMR of 5%."""
    fake = FakeBybit(KEY, SECRET, wallet={"BTC": 25.0, "USDT": 0.0}, spot_borrow={"USDT": 1_000_000.0},
                     book={"BTCUSDT": (59995, 60005)}, collateral_ratio={"BTC": BTC_BANDS, "USDT": 1.0},
                     borrow_mmr={"USDT": 0.05})
    async with venue_on_loopback(fake, ENV, monkeypatch) as served:
        yield served


async def test_issue_14_quantity_tiers_hold_between_syncs(tiered_venue) -> None:
    """Synced at 60,000, BTC at 50,000 with no sync since: weighted BTC 23.8 x 50,000 = 1,190,000,
    MM rate 50,000 / 190,000 = 26.3%, liquidation at 1,050,000 / 23.8 = 44,118; the status view,
    the status line and `status --json` (the stored snapshot) show the venue's figure."""
    fake, url = tiered_venue
    raw = settings_for(url).model_dump(exclude_none=True)
    raw["daemon"]["snapshot_every_s"] = 0.1  # what `status --json` reads is written this often
    async with Running(parse_settings(raw)) as r:
        r.feed.push(fake, 60000)
        await until(lambda: r.d.monitor.engine.price_map()["BTC"] == 60000)
        await r.resync()  # calibrated at 60,000
        syncs = r.handle.syncs
        r.feed.push(fake, 50000)
        await until(lambda: r.d.monitor.engine.price_map()["BTC"] == 50000)
        assert r.handle.syncs == syncs  # no sync in between
        assert fake.mm_rate() == pytest.approx(50000 / 190000)
        view = snapshot(r.d, 10)
        assert view["accounts"][0]["native"] == pytest.approx(fake.mm_rate(), rel=1e-6)
        (btc,) = [e for e in view["accounts"][0]["exposures"] if e["asset"] == "BTC"]
        assert btc["liquidation_price"] == pytest.approx(1_050_000 / 23.8, rel=1e-9)
        book = r.d.monitor.engine.books[0]
        assert liquidation_price(book, r.d.monitor.engine.price_map(), "BTC") == pytest.approx(44118, abs=0.5)
        assert f"worst bybit-main health {190000 / 50000:.3f}" in view["summary"]  # the status line

        async def stored() -> dict:
            while True:
                doc = orjson.loads(orjson.dumps(await gather_status(r.store, wall_clock_ms())))  # strict JSON
                if doc["accounts"] and doc["accounts"][0]["native"] == pytest.approx(fake.mm_rate(), rel=1e-6):
                    return doc["accounts"][0]
                await asyncio.sleep(0.02)
        assert (await asyncio.wait_for(stored(), 10))["account"] == "bybit-main"


# -- acting at the act level in testnet mode ------------------------------------------------------------
def client_plan(link: str) -> str:
    return link.rsplit("n", 1)[0]  # cm<plan id>n<leg>


@pytest.mark.parametrize("venue_answer", ["at once", "withheld", "lost"])
async def test_a_borrowing_account_acts_at_its_level_with_one_order_per_plan(tiered_venue, venue_answer) -> None:
    """The tiered account above, 40% of its BTC sold to USDT (which does not repay a 2025 spot
    loan, only nets it): a fall takes the venue's MM rate past the act level (60%); exactly one
    order per plan reaches the venue, also when the venue's answer is withheld (booked, answered
    late) or lost (never booked, answered late); afterwards the venue's MM rate is below the level."""
    fake, url = tiered_venue
    fake.wallet, fake.spot_borrow = {"BTC": 10.0, "USDT": 0.0}, {"USDT": 450000.0}
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 60000)
        await until(lambda: r.health() < 100)
        fake.delay_create_s = 1.5 if venue_answer == "withheld" else 0.0  # longer than order_timeout_s
        fake.lose_next_create_s = 1.5 if venue_answer == "lost" else 0.0
        r.feed.push(fake, 49000)  # MM rate 22,500 / (9.8 x 49,000 - 450,000) = 82% > 60%: act
        assert fake.mm_rate() > 0.6
        if venue_answer == "lost":
            alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.REJECTED)
            assert "outcome unknown" in alert.detail and fake.orders == {}
            await r.resync()  # reconciled: nothing carries the plan's id, the account may trade again
            r.d.settled.clear()
            r.feed.push(fake, 48990)
        await until(lambda: len(fake.orders) == 1)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        await r.resync()
        plans = [client_plan(link) for link in fake.orders]
        assert len(plans) == len(set(plans)) == 1 and fake.wallet["BTC"] < 10.0
        assert fake.spot_borrow["USDT"] == 450000.0 and fake.mm_rate() < 0.6
        assert 1 / r.health() == pytest.approx(fake.mm_rate(), rel=5e-3)


# -- random accounts, random moves, no sync in between ------------------------------------------------------
def random_bands(rng: random.Random, n: int, step: float, start: float) -> list[tuple[float, float]]:
    """n bands of `step`-ish width from `start`, rates falling (collateral) as lower bounds."""
    lows = [0.0] + sorted(rng.uniform(0.5, 1.5) * step * (j + 1) for j in range(n - 1))
    rates = sorted((round(start - rng.uniform(0, 0.3), 3) for _ in range(n)), reverse=True)
    return list(zip(lows, rates, strict=True))


def random_uppers(rng: random.Random, n: int, step: float, base: float) -> list[tuple[float, float]]:
    """n tiers by upper bound with rising rates (loan and risk-limit tiers)."""
    tops = sorted(rng.uniform(0.5, 1.5) * step * (j + 1) for j in range(n - 1)) + [step * 1e4]
    rates = sorted(round(base * rng.uniform(1, 4), 4) for _ in range(n))
    return list(zip(tops, rates, strict=True))


def randomize(fake: FakeBybit, rng: random.Random) -> dict[str, float]:
    """A random account on the fake (held coins, borrows, a tiered perpetual) and its sync prices."""
    btc, eth = rng.uniform(30000, 70000), rng.uniform(1500, 4000)
    fake.book = {"BTCUSDT": (btc - 0.5, btc + 0.5), "ETHUSDT": (eth - 0.05, eth + 0.05)}
    fake.collateral_ratio = {"BTC": random_bands(rng, rng.randint(1, 4), 8, 0.98),
                             "ETH": random_bands(rng, rng.randint(1, 3), 120, 0.95), "USDT": 1.0}
    fake.borrow_mmr = {"USDT": random_uppers(rng, rng.randint(1, 3), 300000, 0.02),
                       "ETH": random_uppers(rng, 2, 100, 0.03)}
    fake.risk_limits = {"BTCUSDT": random_uppers(rng, rng.randint(1, 4), 300000, 0.005)}
    fake.close_fee_rate = rng.choice([0.0, 0.00055])  # an unpublished part: carried as a residual
    held = {"BTC": rng.uniform(0, 40), "ETH": rng.uniform(0, 300), "USDT": rng.uniform(0, 50000)}
    collateral = held["BTC"] * btc + held["ETH"] * eth + held["USDT"]
    usdt, eth_loan = rng.uniform(0.2, 0.6) * collateral, rng.choice([0.0, rng.uniform(0, 0.1) * collateral / eth])
    fake.wallet = {**held, "ETH": held["ETH"] + eth_loan * rng.random()}  # part of a loan may still be held
    fake.spot_borrow = {"USDT": usdt, "ETH": eth_loan}
    side = rng.choice(["Buy", "Sell", ""])
    size = round(rng.uniform(1, 15), 3) if side else 0.0
    fake.positions = [linear_position(side, size, btc * rng.uniform(0.9, 1.1))] if side else []
    return {"BTC": btc, "ETH": eth, "USDT": 1.0}


def property_settings(url: str):
    raw = settings_for(url).model_dump(exclude_none=True)
    raw["assets"]["ETH"] = {"price": "ETH/USDT", "weight": 0.9}
    raw["accounts"][0]["borrow_mmr"] = {}
    return parse_settings(raw)


async def test_our_mm_rate_follows_the_venues_between_syncs(monkeypatch) -> None:
    """40 seeded random accounts, each synced once, then 6 random price moves of BTC and ETH
    (to -30%/+30%) with no sync: our MM rate (the synced, calibrated book evaluated at the new
    prices) equals the fake's own within 0.5%."""
    rng = random.Random(1414)
    fake = FakeBybit(KEY, SECRET)
    compared = 0
    async with venue_on_loopback(fake, ENV, monkeypatch) as (_, url):
        settings = property_settings(url)
        acc, creds = settings.accounts[0], Credentials(KEY, SECRET)
        exchange = build_exchange(acc, creds, 5.0, BybitGateway.ccxt_options)
        exchange.enableRateLimit = False  # loopback: no need to pace the calls
        gw = BybitGateway(acc, creds, 5.0, exchange=exchange)
        try:
            for case in range(40):
                sync_prices = randomize(fake, rng)
                # An hour apart on the gateway's clock: each case reads its new schedules.
                state = await gw.fetch_state(case * SCHEDULES_EVERY_MS)
                book = SyncApplier(settings).book(at_prices(sync_prices), Synced("bybit-main", state))
                for _ in range(6):
                    prices = {"BTC": sync_prices["BTC"] * rng.uniform(0.7, 1.3),
                              "ETH": sync_prices["ETH"] * rng.uniform(0.7, 1.3), "USDT": 1.0}
                    fake.book = {f"{a}USDT": (prices[a], prices[a]) for a in ("BTC", "ETH")}
                    venue = fake.risk()
                    if venue["balance"] <= 0 or venue["mm"] <= 0:
                        continue  # liquidated, or nothing maintained: no rate to compare
                    ours = to_native(book.model, book.param, evaluate(book, prices).health)
                    assert ours == pytest.approx(venue["rate"], rel=5e-3), (case, prices)
                    compared += 1
        finally:
            await gw.close()
    assert compared > 150
