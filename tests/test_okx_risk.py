"""OKX multi-currency margin risk as OKX counts it: liabilities, discount tiers in the coin, position
and borrowing tiers (the whole amount at its tier's rate), the liquidation fee in mgnRatio's
denominator, and between syncs our MM rate against the fake venue's own (tests/fake_venue/okx.py).

OKX's worked numbers pinned here:
- discount rates: 11,000,000 USDT over bands 0-5M at 1, 5M-10M at 0.9, above at 0.8 is worth
  10,300,000 USD (OKX, "Discount rates overview" in its discount-rate announcements, e.g. "OKX to
  adjust discount rates for LUNA in multi-currency margin mode", 2022; the rates page is
  https://www.okx.com/trade-market/discountrate/futures);
- "Get balance" (https://www.okx.com/docs-v5/en/#trading-account-rest-api-get-balance), its
  response example: adjEq 10679688.0460531643092577, mmr 134.8917694842024, notionalUsd
  33722.9423710505978888, mgnRatio 70375.35408747017: the denominator adjEq / mgnRatio is mmr plus
  0.05% of notionalUsd (the liquidation fee at the taker rate), and mmr is 0.4% of notionalUsd.
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import pytest

from monitor.accounts.synced import Synced, SyncApplier
from monitor.config import parse_settings
from monitor.exchange import okx as okx_gateway
from monitor.exchange.credentials import Credentials
from monitor.exchange.okx import OkxGateway
from monitor.exchange.venues import (okx_discount_tiers, okx_liquidation_fee_rate, okx_multi_currency_state,
                                     okx_tier_rows, okx_totals, okx_whole_amount_tiers)
from monitor.model import EventKind
from monitor.risk.portfolio import evaluate, to_native
from tests.fake_venue.okx import CT_VAL, LIQ_FEE_RATE, SWAP_TIERS, FakeOkx
from tests.loopback import venue_on_loopback
from tests.test_exchange_bybit import Running, until
from tests.test_exchange_okx import ENV, KEY, PASSPHRASE, SECRET, settings_for, streaming

ACCOUNT = "okx-main"
SWAP = "BTC-USDT-SWAP"
DOCS_BALANCE = {"adjEq": "10679688.0460531643092577", "imr": "3372.2942371050594217", "isoEq": "0",
                "mgnRatio": "70375.35408747017", "mmr": "134.8917694842024",
                "notionalUsd": "33722.9423710505978888", "ordFroz": "0", "totalEq": "11172992.1657531589092577"}


def discount_item(ccy: str, bands: list[tuple[float, float, str]], min_rate: str = "0") -> dict:
    """One coin of GET /api/v5/public/discount-rate-interest-free-quota: (minAmt, discountRate, maxAmt)."""
    return {"ccy": ccy, "amt": "0", "discountLv": "", "minDiscountRate": min_rate,
            "details": [{"tier": str(i + 1), "minAmt": f"{lo:g}", "maxAmt": hi, "discountRate": f"{rate}",
                         "liqPenaltyRate": "0", "disCcyEq": ""} for i, (lo, rate, hi) in enumerate(bands)]}


def test_the_discount_bands_of_okxs_example_value_11m_usdt_at_10_3m() -> None:
    tiers = okx_discount_tiers([discount_item("USDT", [(0, 1, "5000000"), (5e6, 0.9, "10000000"), (1e7, 0.8, "")])])
    usdt = tiers["USDT"]
    assert usdt.unit == "qty"  # minAmt/maxAmt are "in the currency"
    assert usdt.value(11_000_000, 1.0) == pytest.approx(5e6 * 1 + 5e6 * 0.9 + 1e6 * 0.8)  # 10,300,000
    assert usdt.value(11_000_000, 1.0) == pytest.approx(10_300_000)
    assert usdt.value(4_000_000, 1.0) == pytest.approx(4_000_000)  # band-wise: the first band keeps its rate


def test_past_the_last_bounded_band_the_minimum_discount_rate_applies() -> None:
    tiers = okx_discount_tiers([discount_item("BTC", [(0, 0.98, "10"), (10, 0.9, "20")], min_rate="0.5")])
    assert tiers["BTC"].value(30, 1.0) == pytest.approx(10 * 0.98 + 10 * 0.9 + 10 * 0.5)


def test_the_get_balance_example_holds_the_liquidation_fee_outside_mmr() -> None:
    adj, ratio, mmr, notional = (float(DOCS_BALANCE[k]) for k in ("adjEq", "mgnRatio", "mmr", "notionalUsd"))
    assert adj / ratio == pytest.approx(mmr + 0.0005 * notional, rel=1e-12)  # 151.7532 = 134.8918 + 16.8615
    assert mmr == pytest.approx(0.004 * notional, rel=1e-12)  # the whole position at one tier's rate
    assert okx_liquidation_fee_rate(DOCS_BALANCE) == pytest.approx(0.0005, rel=1e-9)
    totals = okx_totals({**DOCS_BALANCE, "details": []}, [])
    assert totals.num == pytest.approx(adj) and totals.den == pytest.approx(151.75324066972766)
    assert totals.parts["maintenance"] == totals.den and totals.parts["liabilities"] == 0


def tier_rows(rows: list[tuple[float, float]]) -> list[dict]:
    return [{"tier": str(i + 1), "minSz": f"{rows[i - 1][0] if i else 0:g}", "maxSz": f"{hi:g}", "mmr": f"{m}"}
            for i, (hi, m) in enumerate(rows)]


def test_a_position_tier_sets_the_rate_of_the_whole_position() -> None:
    rows = okx_tier_rows(list(reversed(tier_rows(SWAP_TIERS))))  # in tier order, whatever the answer's
    assert rows == tuple(SWAP_TIERS)
    tiers = okx_whole_amount_tiers(rows, CT_VAL)  # in BTC: 2,000 contracts of 0.01 BTC = 20 BTC
    assert tiers.value(2000 * CT_VAL, 40000) == pytest.approx(20 * 40000 * 0.004)  # maxSz is in tier 1
    assert tiers.value(2001 * CT_VAL, 40000) == pytest.approx(20.01 * 40000 * 0.006)  # all of it at tier 2
    assert tiers.value(9000 * CT_VAL, 40000) == pytest.approx(90 * 40000 * 0.01)
    with_fee = okx_whole_amount_tiers(rows, CT_VAL, plus=LIQ_FEE_RATE)
    assert with_fee.value(10, 40000) == pytest.approx(10 * 40000 * (0.004 + LIQ_FEE_RATE))


def coin(ccy: str, cash: float, interest: float, price: float, upl: float = 0.0) -> dict:
    eq = cash + upl - interest
    return {"ccy": ccy, "cashBal": f"{cash}", "interest": f"{interest}", "eq": f"{eq}", "eqUsd": f"{eq * price}",
            "liab": f"{max(-eq, 0)}", "crossLiab": f"{max(-eq, 0)}", "upl": f"{upl}"}


def test_a_borrowed_coin_is_owed_once_with_its_interest() -> None:
    # cashBal already holds the borrowed amount (negative); liab = |min(0, eq)| counts the interest too:
    # the net holding is cashBal - interest, not cashBal - liab.
    account = {"adjEq": "9988", "mgnRatio": "6.65", "mmr": "1501.2", "notionalUsd": "0",
               "details": [coin("USDT", -30000, 12, 1.0), coin("BTC", 1.0, 0, 40000)]}
    state = okx_multi_currency_state(account, [], 0,
                                     borrow_tiers={"USDT": okx_tier_rows(tier_rows([(1e9, 0.05)]))})
    assert state.holdings == {"USDT": -30012.0, "BTC": 1.0} and state.borrowed == {}
    assert state.totals.parts["liabilities"] == pytest.approx(30012)
    assert state.borrow_tiers["USDT"].value(30012, 1.0) == pytest.approx(0.05 * 30012)
    assert state.native == pytest.approx(1 / 6.65)


def test_a_swaps_profit_lowers_liab_but_not_what_is_borrowed() -> None:
    # 5,000 USDT of swap profit settled in a coin owing 30,000: liab = |min(0, eq)| = 25,000, the loan is 30,000.
    account = {"adjEq": "1", "mgnRatio": "1", "details": [coin("USDT", -30000, 0, 1.0, upl=5000)]}
    assert okx_totals(account, []).parts["liabilities"] == pytest.approx(30000)
    state = okx_multi_currency_state(account, [], 0)
    assert state.holdings == {"USDT": -30000.0}


# -- on the fake venue, through ccxt -----------------------------------------------------------------

def risk_settings(url: str):
    raw = settings_for(url).model_dump(exclude_none=True)
    raw["assets"] = {"BTC": {"price": "BTC/USDT", "weight": 1.0}, "ETH": {"price": "ETH/USDT", "weight": 1.0},
                     "USDT": {"price": 1.0}}
    raw["accounts"][0]["borrow_mmr"] = {}
    return parse_settings(raw)


def make_fake() -> FakeOkx:
    return FakeOkx(KEY, SECRET, PASSPHRASE, cash={"BTC": 1.0, "USDT": -30000.0}, book={"BTC-USDT": (39995, 40005)},
                   discount={"BTC": [(0.0, 0.95)]}, borrow_tiers={"USDT": [(1e9, 0.05)]})


@pytest.fixture
async def venue(monkeypatch):
    async with venue_on_loopback(make_fake(), ENV, monkeypatch) as served:
        yield served


def gateway(settings) -> OkxGateway:
    gw = OkxGateway(settings.accounts[0], Credentials(KEY, SECRET, PASSPHRASE), 2.0, ("BTC/USDT",))
    gw._x.enableRateLimit = False  # ccxt paces OKX's public endpoints at up to 1 s a call: not on loopback
    return gw


async def test_tiers_are_read_once_through_the_public_endpoints_then_hourly(venue, monkeypatch) -> None:
    fake, url = venue
    fake.swaps[SWAP] = (2500, 40000.0)
    gw = gateway(risk_settings(url))
    try:
        state = await gw.fetch_state(0)
        await gw.fetch_state(1)
        assert sorted(tier_queries(fake), key=str) == [{"ccy": "USDT", "instType": "MARGIN", "tdMode": "cross"},
                                                      {"instFamily": "BTC-USDT", "instType": "SWAP", "tdMode": "cross"}]
        assert fake.requests.count(("GET", "/api/v5/public/discount-rate-interest-free-quota")) == 1
        (p,) = state.positions
        assert p.size == pytest.approx(25) and p.mmr.unit == "qty"
        assert p.mmr.value(25, 40000) == pytest.approx(25 * 40000 * (0.006 + LIQ_FEE_RATE))  # tier 2, whole
        monkeypatch.setattr(okx_gateway, "PUBLISHED_REFRESH_S", -1.0)  # an hour later
        await gw.fetch_state(2)
        assert len(tier_queries(fake)) == 4
    finally:
        await gw.close()


def tier_queries(fake: FakeOkx) -> list[dict[str, str]]:
    """The queries of every GET /api/v5/public/position-tiers the fake answered."""
    return [dict(parse_qsl(urlsplit(p).query)) for _, p in fake.requests
            if p.startswith("/api/v5/public/position-tiers")]


def random_account(fake: FakeOkx, rng: random.Random) -> None:
    """A random multi-currency margin account: coins held or borrowed (with interest), discount bands
    in the coin, borrowing tiers, maybe a BTC swap in any tier."""
    btc, eth = rng.uniform(20000, 80000), rng.uniform(1000, 4000)
    fake.book = {"BTC-USDT": (btc - 1, btc + 1), "ETH-USDT": (eth - 0.1, eth + 0.1)}
    fake.cash = {"BTC": rng.uniform(-3, 20), "ETH": rng.uniform(-40, 200), "USDT": rng.uniform(-300e3, 300e3)}
    fake.interest = {c: -x * rng.uniform(0, 0.005) for c, x in fake.cash.items() if x < 0}
    fake.discount = {"BTC": [(0.0, 0.98), (rng.uniform(1, 5), 0.95), (rng.uniform(6, 15), 0.9)],
                     "ETH": [(0.0, 0.95), (rng.uniform(10, 80), 0.9), (rng.uniform(90, 150), 0.7)],
                     "USDT": [(0.0, 1.0)]}
    fake.borrow_tiers = {"USDT": [(rng.uniform(50e3, 150e3), 0.03), (500e3, 0.05), (1e9, 0.1)],
                         "BTC": [(rng.uniform(0.5, 2), 0.03), (10, 0.06), (1e6, 0.1)],
                         "ETH": [(rng.uniform(5, 20), 0.04), (1e6, 0.08)]}
    pos = rng.choice([0, 0, rng.uniform(-6000, 6000)])
    fake.swaps = {SWAP: (round(pos, 2), btc * rng.uniform(0.9, 1.1))} if pos else {}


def mm_rate(fake: FakeOkx) -> float | None:
    """The venue's own figure: 1 / mgnRatio, where its adjusted equity covers anything."""
    sums = fake.account_sums()
    return sums["den"] / sums["adj"] if sums["adj"] > 0 and sums["den"] > 0 else None


async def test_between_syncs_our_mm_rate_is_okxs_at_every_price(venue) -> None:
    fake, url = venue
    settings = risk_settings(url)
    rng = random.Random(14)
    checked = 0
    for _ in range(30):
        random_account(fake, rng)
        if mm_rate(fake) is None:
            continue
        gw = gateway(settings)
        try:
            state = await gw.fetch_state(0)
        finally:
            await gw.close()
        prices = {"BTC": fake.price("BTC"), "ETH": fake.price("ETH"), "USDT": 1.0}
        applier = SyncApplier(settings)
        monitor = SimpleNamespace(engine=SimpleNamespace(price_map=lambda p=prices: dict(p)), schedules=None)
        book = applier.book(monitor, Synced(ACCOUNT, state))
        cal = applier.calibration[ACCOUNT]
        assert cal.model_native == pytest.approx(state.native, rel=1e-6)  # the model alone is the venue's
        assert not cal.disagreeing(1e-6)  # collateral, liabilities, maintenance and PnL each agree
        for _ in range(6):  # prices move, no sync
            moved = {"BTC": prices["BTC"] * rng.uniform(0.8, 1.2), "ETH": prices["ETH"] * rng.uniform(0.8, 1.2),
                     "USDT": 1.0}
            fake.book = {f"{c}-USDT": (moved[c], moved[c]) for c in ("BTC", "ETH")}
            venue_rate = mm_rate(fake)
            if venue_rate is None:
                continue
            ours = to_native("unified", 1.0, evaluate(book, moved).health)
            assert math.isfinite(ours) and ours == pytest.approx(venue_rate, rel=0.005)
            checked += 1
    assert checked >= 60  # most random accounts and moves were compared


async def test_the_daemon_tracks_okxs_mgn_ratio_with_a_tiered_swap_and_a_loan(venue) -> None:
    fake, url = venue
    fake.cash, fake.interest = {"USDT": 900_000.0, "BTC": -3.0}, {"BTC": 0.001}
    fake.borrow_tiers = {"BTC": [(2.0, 0.03), (1e6, 0.06)]}  # the 3.001 BTC borrowed are all at 6%
    fake.swaps[SWAP] = (2100, 40000.0)  # 21 BTC long: tier 2 (0.6%) on the whole position
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000, "BTC-USDT")
        await until(lambda: r.health() > 1)
        await r.resync()  # calibrated at a price the engine has
        assert r.health() == pytest.approx(fake.margin_ratio(), rel=1e-6)
        syncs = r.handle.syncs
        for price in (37000, 43500, 34000):
            r.feed.push(fake, price, "BTC-USDT")
            await until(lambda p=price: r.d.monitor.engine.price_map()["BTC"] == p)
            assert r.health() == pytest.approx(fake.margin_ratio(), rel=0.005)
        assert r.handle.syncs == syncs  # no sync in between
        assert not [e for e in r.notifier.events if e.kind == EventKind.DRIFT]


async def test_a_swap_opened_on_the_stream_brings_a_sync_that_reads_its_tiers(venue) -> None:
    fake, url = venue
    async with Running(settings_for(url)) as r:
        r.feed.push(fake, 40000, "BTC-USDT")
        await until(lambda: r.health() > 1 and streaming(fake))
        assert [q for q in tier_queries(fake) if q["instType"] == "SWAP"] == []  # nothing open, nothing read
        syncs = r.handle.syncs
        fake.swaps[SWAP] = (2500, 40000.0)  # 25 BTC: tier 2 of the family
        await fake.push_positions([SWAP])
        await until(lambda: "BTC" in r.d.monitor.engine.books[0].perp_tiers)
        assert r.handle.syncs > syncs  # the stream asked for the sync that reads the family's tiers
        assert {"instFamily": "BTC-USDT", "instType": "SWAP", "tdMode": "cross"} in tier_queries(fake)
        tiers = r.d.monitor.engine.books[0].perp_tiers["BTC"]
        assert tiers.value(25, 40000) == pytest.approx(25 * 40000 * (0.006 + LIQ_FEE_RATE))
        assert r.health() == pytest.approx(fake.margin_ratio(), rel=1e-6)
