"""The venues' own worked examples, written as a user writes them in the config, through the
engine (incremental, between syncs), the exact recompute and the liquidation-price solver.

Each case cites the page its numbers come from; the numbers are the venue's, not ours.
"""

from __future__ import annotations

import math

import pytest

from monitor.accounts.static import build_books
from monitor.config import parse_settings
from monitor.risk.engine import RiskEngine
from monitor.risk.portfolio import evaluate, liquidated, maintenance_of, to_native
from monitor.risk.solve import liquidation_price


def engine_for(assets: dict, account: dict, prices: dict[str, float]) -> RiskEngine:
    settings = parse_settings({"assets": assets, "accounts": [{"name": "a", **account}]})
    books = build_books(settings)
    fixed = {n: a.price for n, a in settings.assets.items() if a.symbol is None}
    engine = RiskEngine(books, sorted(settings.assets), fixed)
    for asset, price in prices.items():
        engine.apply(engine.asset_index[asset], price, 1)
    return engine


def test_aave_health_factor_and_liquidation_price():
    # Aave help centre, "Liquidations" (aave.com/help/borrowing/liquidations): supply $10,000 of
    # ETH at an 80% liquidation threshold, borrow $6,000 of GHO: health factor 1.333. At ETH 2,500
    # that is 4 ETH, liquidated when 4 * p * 0.8 = 6,000: p = 1,875.
    engine = engine_for({"ETH": {"price": "ETH/USDT", "weight": 0.8}, "GHO": {"price": 1.0}},
                        {"model": "health_factor", "holdings": {"ETH": 4.0, "GHO": -6000.0}}, {"ETH": 2500.0})
    assert engine.health[0] == pytest.approx(4 / 3)
    assert liquidation_price(engine.books[0], engine.price_map(), "ETH") == pytest.approx(1875.0)


BYBIT_BTC_BANDS = [{"up_to_qty": 10, "weight": 0.98}, {"up_to_qty": 20, "weight": 0.95},
                   {"up_to_qty": 30, "weight": 0.9}, {"weight": 0.0}]


def test_bybit_quantity_bands_stay_exact_between_syncs():
    # Bybit help centre, "Collateral value ratio" (tiers by coin quantity, progressive) and
    # "Unified Trading Account: margin calculation" (MM rate = maintenance margin / margin balance).
    # 25 BTC: 10 * 0.98 + 10 * 0.95 + 5 * 0.9 = 23.8 BTC of collateral value at any price.
    # 1,000,000 USDT borrowed at a borrow MMR of 5%: MM = 50,000.
    # At 60,000 (the last sync): 1,428,000 - 1,000,000 = 428,000; MM rate 11.68%.
    # At 50,000 (no sync since): 1,190,000 - 1,000,000 = 190,000; MM rate 50,000 / 190,000 = 26.3%.
    # Liquidation: 23.8 p - 1,000,000 = 50,000 -> p = 44,117.6.
    engine = engine_for({"BTC": {"price": "BTC/USDT", "weight": BYBIT_BTC_BANDS}, "USDT": {"price": 1.0}},
                        {"model": "unified", "holdings": {"BTC": 25.0, "USDT": -1_000_000.0},
                         "borrow_mmr": {"USDT": 0.05}}, {"BTC": 60_000.0})
    book = engine.books[0]
    assert to_native("unified", book.param, float(engine.health[0])) == pytest.approx(50_000 / 428_000)
    engine.apply(engine.asset_index["BTC"], 50_000.0, 2)  # a tick, not a sync
    assert to_native("unified", book.param, float(engine.health[0])) == pytest.approx(50_000 / 190_000)
    assert round(to_native("unified", book.param, float(engine.health[0])), 3) == 0.263
    assert liquidation_price(book, engine.price_map(), "BTC") == pytest.approx(1_050_000 / 23.8)
    assert round(liquidation_price(book, engine.price_map(), "BTC")) == 44_118


def test_bybit_risk_limit_tiers_on_a_short():
    # Bybit help centre, "Maintenance Margin (USDT Contract)": XYZUSDT tiers 0-1,000 at 2%,
    # 1,000-2,000 at 2.5%, 2,000-3,000 at 3%, 3,000-4,000 at 3.5%, 4,000-5,000 at 4%; "any excess
    # beyond a particular tier is subject to the MMR of the new tier". A short of 100 at 45 is
    # worth 4,500: 20 + 25 + 30 + 35 + 500 * 4% = 130.0.
    tiers = [{"up_to": 1000, "mmr": 0.02}, {"up_to": 2000, "mmr": 0.025}, {"up_to": 3000, "mmr": 0.03},
             {"up_to": 4000, "mmr": 0.035}, {"mmr": 0.04}]
    engine = engine_for({"XYZ": {"price": "XYZ/USDT"}, "USDT": {"price": 1.0}},
                        {"model": "unified", "holdings": {"USDT": 1000.0},
                         "positions": [{"symbol": "XYZ/USDT:USDT", "size": -100, "entry": 45, "mmr": tiers}]},
                        {"XYZ": 45.0})
    book = engine.books[0]
    assert maintenance_of(book, "XYZ", book.exposures["XYZ"], 45.0) == pytest.approx(130.0)
    assert engine.den[0] == pytest.approx(130.0)
    # At 35 (a long's example on the same page: 3,500 -> 20 + 25 + 30 + 17.5 = 92.5), now for the short.
    engine.apply(engine.asset_index["XYZ"], 35.0, 2)
    assert engine.den[0] == pytest.approx(92.5)
    assert evaluate(book, engine.price_map()).den == pytest.approx(92.5)


def test_a_venues_own_deductions_are_used_as_published():
    # Binance, "Leverage and Margin of USDⓈ-M Futures": maintenance margin = notional * maintenance
    # margin rate - maintenance amount ("cum" in GET /fapi/v1/leverageBracket). The same XYZ tiers
    # with the venue's cum (0, 5, 15, 30, 50) give the progressive figure exactly.
    from monitor.risk.tiers import Tiers

    published = Tiers((0.0, 1000, 2000, 3000, 4000), (0.02, 0.025, 0.03, 0.035, 0.04), "value",
                      (0.0, 5.0, 15.0, 30.0, 50.0))
    progressive = Tiers((0.0, 1000, 2000, 3000, 4000), (0.02, 0.025, 0.03, 0.035, 0.04), "value")
    for notional in (0.0, 999.0, 1500.0, 3500.0, 4500.0, 9000.0):
        assert published.apply(notional) == pytest.approx(progressive.apply(notional), abs=1e-9)
    assert published.apply(4500.0) == pytest.approx(130.0)


def test_portfolio_margin_liquidates_at_uni_mmr_1_05_and_at_equality():
    # Binance Portfolio Margin: uniMMR = account equity / account maintenance margin, liquidation at
    # uniMMR <= 1.05 (Binance FAQ "Portfolio Margin: uniMMR"). Health is uniMMR / 1.05: 1 exactly at 1.05.
    # 1 BTC at weight 1, 100,000 USDT borrowed at MMR 10%: equity = p - 100,000, MM = 10,000.
    # uniMMR = 1.05 -> p = 110,500.
    engine = engine_for({"BTC": {"price": "BTC/USDT"}, "USDT": {"price": 1.0}},
                        {"model": "unified", "liquidation_level": 1.05, "holdings": {"BTC": 1.0, "USDT": -100_000.0},
                         "borrow_mmr": {"USDT": 0.1}}, {"BTC": 130_000.0})
    book = engine.books[0]
    assert engine.health[0] == pytest.approx(30_000 / 10_000 / 1.05)
    assert to_native("unified", book.param, float(engine.health[0])) == pytest.approx(10_000 / 30_000)
    assert liquidation_price(book, engine.price_map(), "BTC") == pytest.approx(110_500.0)
    engine.apply(engine.asset_index["BTC"], 110_500.0, 2)
    assert engine.health[0] == pytest.approx(1.0)
    assert liquidated(1.0) and not liquidated(1.0 + 1e-12) and not liquidated(math.nan)


def test_borrow_maintenance_tiers_by_quantity():
    # Bybit GET /v5/spot-margin-trade/position-tiers: a borrow's maintenance rate by tiers of the
    # borrowed quantity (`borrowLimit`, cumulative). 300,000 USDT borrowed over tiers 0-100,000 at 4%
    # and above at 6%: 4,000 + 12,000 = 16,000 at any BTC price.
    engine = engine_for({"BTC": {"price": "BTC/USDT"}, "USDT": {"price": 1.0}},
                        {"model": "unified", "holdings": {"BTC": 10.0, "USDT": -300_000.0},
                         "borrow_mmr": {"USDT": [{"up_to_qty": 100_000, "mmr": 0.04}, {"mmr": 0.06}]}},
                        {"BTC": 50_000.0})
    assert engine.den[0] == pytest.approx(16_000.0)
    engine.apply(engine.asset_index["BTC"], 40_000.0, 2)
    assert engine.den[0] == pytest.approx(16_000.0)
    assert engine.num[0] == pytest.approx(400_000 - 300_000)


@pytest.mark.parametrize("bad, words", [
    ([{"up_to": 10, "weight": 0.9}, {"up_to_qty": 20, "weight": 0.8}, {"weight": 0.7}], "all up_to"),
    ([{"up_to": 10, "up_to_qty": 10, "weight": 0.9}, {"weight": 0.7}], "not both"),
])
def test_a_schedule_has_one_unit(bad, words):
    from monitor.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        parse_settings({"assets": {"BTC": {"price": "BTC/USDT", "weight": bad}}, "accounts": []})
