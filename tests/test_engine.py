"""The incremental risk engine against the exact recompute, and each margin model
against hand arithmetic from the venues' published formulas."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.accounts.static import build_books, tiers_of
from monitor.config import Tier, load_settings
from monitor.risk.engine import RiskEngine
from monitor.risk.portfolio import (
    AccountBook,
    Exposure,
    evaluate,
    exposure_terms,
    from_native,
    health_of,
    to_native,
)
from monitor.risk.tiers import Tiers

CONTRACT = Path(__file__).parent / "configs" / "contract.toml"
ASSETS = [f"A{k}" for k in range(6)]
MODELS = ("health_factor", "ltv", "margin_level", "unified")
REL = 1e-9


# -- helpers ----------------------------------------------------------------------------
def book(name, model, exposures, weights=None, param=None):
    """An AccountBook with the model's scale: h = scale * N / D."""
    if model == "ltv":
        scale, param = param, param
    elif model == "margin_level":
        scale, param = 1.0 / param, param
    else:
        scale, param = 1.0, 1.0
    return AccountBook(name, model, scale, param, dict(exposures), dict(weights or {}))


def held(b: AccountBook) -> list[str]:
    return [a for a, e in b.exposures.items() if not e.is_empty]


def magnitudes(b: AccountBook, prices: dict[str, float]) -> np.ndarray:
    """Sums of the absolute sizes of the terms making up (N, D, equity): the scale of float error."""
    mag = np.zeros(3)
    for a in held(b):
        p = prices[a]
        if math.isnan(p):
            continue  # the engine counts an unpriced asset as 0 (and the account as unknown)
        e = b.exposures[a]
        mag += (abs(b.schedule(a).value(e.qty, p)) + abs(e.perp_size * p) + abs(e.perp_cost) + e.debt * p,
                e.debt * p + b.borrow_schedule(a).value(e.debt, p) + e.perp_mm * p
                + b.perp_schedule(a).value(abs(e.perp_size), p),
                (e.qty + e.debt + abs(e.perp_size)) * p + abs(e.perp_cost))
    return mag


def assert_matches_full_recompute(engine: RiskEngine, drift_scale: np.ndarray | None = None) -> None:
    """Every account's num/den/equity/health equal portfolio.evaluate on its book, relative 1e-9.

    "Relative" is to the larger of the value itself and `drift_scale[i]`: the largest
    term magnitudes the account's sums held since its last exact recompute. The
    incremental update N += new - old loses eps * old to rounding, so after a term
    shrinks by orders of magnitude (a price falling 1e5 -> 0.01 in one tick) that
    is what the error is measured against until resync (see the resync test).
    """
    prices = engine.price_map()
    for i, b in enumerate(engine.books):
        priced = {a: e for a, e in b.exposures.items() if not e.is_empty and not math.isnan(prices[a])}
        ref = evaluate(replace(b, exposures=priced), prices)  # what the engine sums: priced assets only
        full = evaluate(b, prices)
        mag = magnitudes(b, prices) if drift_scale is None else np.maximum(drift_scale[i], magnitudes(b, prices))
        tol_n, tol_d, tol_e = REL * np.maximum(mag, np.abs([ref.num, ref.den, ref.equity]))
        num, den, eq, h = engine.num[i], engine.den[i], engine.equity[i], engine.health[i]
        ctx = f"account {i} {b.model}: engine ({num}, {den}, {eq}, {h}) vs ref {ref}, tol {(tol_n, tol_d, tol_e)}"
        assert abs(num - ref.num) <= tol_n, ctx
        assert abs(den - ref.den) <= tol_d, ctx
        assert abs(eq - ref.equity) <= tol_e, ctx
        if any(math.isnan(prices[a]) for a in held(b)):
            assert math.isnan(h), ctx
            assert math.isnan(full.health), f"evaluate must say unknown too: {full}"
            continue
        assert not math.isnan(h), ctx
        assert abs(full.num - ref.num) <= tol_n and full.den == ref.den, ctx
        if ref.den == 0:
            assert den == 0, ctx  # no debt and no margin terms: exactly zero, never drift
            if abs(ref.num) <= tol_n:  # N is zero up to rounding: the sign of inf is noise
                assert math.isinf(h), ctx
            else:
                assert h == (math.inf if ref.num > 0 else -math.inf) == full.health, ctx
        elif ref.den > 2 * tol_d:
            tol_h = b.scale * (tol_n + abs(ref.num) * 2 * tol_d / ref.den) / ref.den + REL * abs(ref.health)
            assert abs(h - ref.health) <= tol_h, ctx
            assert full.health == ref.health, ctx


# -- hypothesis strategies ---------------------------------------------------------------
flat_schedules = st.floats(0.3, 1.0).map(Tiers.flat)


@st.composite
def tiered_schedules(draw):
    """Collateral bands by USD value (a config's) or by coin quantity (Bybit's, OKX's)."""
    by_qty = draw(st.booleans())
    bounds = sorted(draw(st.lists(st.floats(1e-2, 1e3) if by_qty else st.floats(10.0, 1e7),
                                  min_size=1, max_size=3, unique=True)))
    weights = sorted(draw(st.lists(st.floats(0.3, 1.0), min_size=len(bounds) + 1, max_size=len(bounds) + 1)),
                     reverse=True)
    key = "up_to_qty" if by_qty else "up_to"
    tiers = [Tier(**{key: b}, weight=w) for b, w in zip(bounds, weights)] + [Tier(weight=weights[-1])]
    return tiers_of(tiers)


@st.composite
def maintenance_schedules(draw):
    """Rising maintenance rates by quantity or value, continuous (progressive) or with a venue's own
    deductions (Bybit mmDeduction, Binance cum)."""
    unit = draw(st.sampled_from(["qty", "value"]))
    bounds = sorted(draw(st.lists(st.floats(1e-2, 1e3) if unit == "qty" else st.floats(10.0, 1e6),
                                  min_size=0, max_size=3, unique=True)))
    # Venues charge something from the first band on (a zero rate there would make D drift from 0).
    rates = sorted(draw(st.lists(st.floats(1e-4, 0.2), min_size=len(bounds) + 1, max_size=len(bounds) + 1)))
    tiers = Tiers((0.0, *bounds), tuple(rates), unit)
    if draw(st.booleans()):  # the venue's deductions, rounded as published
        lows, r = (0.0, *bounds), rates
        cum = [0.0]
        for j in range(1, len(lows)):
            cum.append(cum[-1] + (r[j] - r[j - 1]) * lows[j])
        tiers = Tiers(lows, tuple(rates), unit, tuple(round(c, 2) for c in cum))
    return tiers


schedules = st.one_of(flat_schedules, tiered_schedules())
amounts = st.one_of(st.just(0.0), st.floats(1e-3, 1e3))
prices_st = st.floats(0.01, 1e5)


@st.composite
def exposures(draw, unified: bool):
    qty, debt = draw(amounts), draw(amounts)
    if draw(st.integers(0, 4)) == 0:  # both sides of the same asset
        qty, debt = draw(st.floats(1e-3, 1e3)), draw(st.floats(1e-3, 1e3))
    if not unified:
        return Exposure(qty=qty, debt=debt) if qty or debt else Exposure(qty=1.0)
    size = draw(st.one_of(st.just(0.0), st.floats(-100, -1e-3), st.floats(1e-3, 100)))  # long and short
    rates = st.one_of(st.just(0.0), st.floats(1e-4, 0.2))
    entry, mmr = draw(st.floats(1.0, 1e4)), draw(rates)
    e = Exposure(qty, debt, size, size * entry, abs(size) * mmr)
    return e if not e.is_empty else Exposure(qty=1.0)


@st.composite
def accounts(draw, name: str, n_assets: int, base: list[Tiers]):
    model = draw(st.sampled_from(MODELS))
    param = draw(st.floats(0.5, 0.95)) if model == "ltv" else draw(st.floats(1.02, 1.3))
    ks = draw(st.lists(st.integers(0, n_assets - 1), min_size=1, max_size=n_assets, unique=True))
    exps = {ASSETS[k]: draw(exposures(model == "unified")) for k in ks}
    overrides = draw(st.dictionaries(st.integers(0, n_assets - 1), schedules, max_size=2))
    weights = {ASSETS[k]: overrides.get(k, base[k]) for k in range(n_assets)}
    b = book(name, model, exps, weights, param)
    if model == "unified":  # borrow and perp maintenance tiers on some held assets
        borrow = draw(st.dictionaries(st.sampled_from(list(exps)), maintenance_schedules(), max_size=2))
        perp = draw(st.dictionaries(st.sampled_from(list(exps)), maintenance_schedules(), max_size=2))
        b = replace(b, borrow_tiers=borrow, perp_tiers=perp)
    if draw(st.integers(0, 4)) == 0:  # a residual from the last sync
        b = replace(b, residual_num=draw(st.floats(-1e4, 1e4)), residual_den=draw(st.one_of(st.just(0.0), st.floats(1.0, 1e4))))
    return b


def changed_book(data, b: AccountBook, n_assets: int) -> AccountBook:
    """A holdings change: resize, add an asset, empty one (zeroed or removed), or replace all."""
    unified = b.model == "unified"
    exps = dict(b.exposures)
    kind = data.draw(st.sampled_from(["resize", "add", "zero", "remove", "replace", "weights", "tiers", "residual"]))
    names = held(b)
    if kind == "resize" and names:
        a = data.draw(st.sampled_from(names))
        f = data.draw(st.floats(0.1, 3.0))
        e = exps[a]
        exps[a] = replace(e, qty=e.qty * f, debt=e.debt * data.draw(st.floats(0.1, 3.0)))
    elif kind == "add":
        free = [ASSETS[k] for k in range(n_assets) if ASSETS[k] not in names]
        if free:
            exps[data.draw(st.sampled_from(free))] = data.draw(exposures(unified))
    elif kind == "zero" and names:
        exps[data.draw(st.sampled_from(names))] = Exposure()
    elif kind == "remove" and names:
        del exps[data.draw(st.sampled_from(names))]
    elif kind == "replace":
        ks = data.draw(st.lists(st.integers(0, n_assets - 1), max_size=n_assets, unique=True))
        exps = {ASSETS[k]: data.draw(exposures(unified)) for k in ks}
    elif kind == "weights" and names:  # a changed per-account override on a held asset
        w = dict(b.weights)
        w[data.draw(st.sampled_from(names))] = data.draw(schedules)
        return replace(b, exposures=exps, weights=w)
    elif kind == "tiers" and names and unified:  # the venue's maintenance tiers changed (a sync)
        t = dict(b.perp_tiers if data.draw(st.booleans()) else b.borrow_tiers)
        t[data.draw(st.sampled_from(names))] = data.draw(maintenance_schedules())
        return replace(b, exposures=exps, perp_tiers=t)
    elif kind == "residual":
        return replace(b, exposures=exps, residual_num=data.draw(st.floats(-1e4, 1e4)),
                       residual_den=data.draw(st.one_of(st.just(0.0), st.floats(1.0, 1e4))))
    return replace(b, exposures=exps)


# -- the property ----------------------------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_incremental_equals_full_recompute(data):
    n_assets = data.draw(st.integers(2, 6), label="assets")
    n_accounts = data.draw(st.integers(1, 30), label="accounts")
    base = [data.draw(schedules) for _ in range(n_assets)]
    books = [data.draw(accounts(f"acc{i}", n_assets, base)) for i in range(n_accounts)]
    fixed = {ASSETS[0]: 1.0} if data.draw(st.booleans(), label="A0 fixed") else None
    engine = RiskEngine(books, ASSETS[:n_assets], fixed)
    assert_matches_full_recompute(engine)

    def current_scale():
        prices = engine.price_map()
        return np.array([magnitudes(b, prices) for b in engine.books])

    drift_scale = current_scale()
    ts = 0
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        ts += data.draw(st.integers(0, 5000))
        if data.draw(st.integers(0, 3)) > 0:  # mostly ticks
            k = data.draw(st.integers(0, n_assets - 1))
            touched = engine.apply(k, data.draw(prices_st), ts)
            holders = [i for i, b in enumerate(engine.books) if ASSETS[k] in held(b)]
            assert sorted(touched.tolist()) == holders
        else:
            i = data.draw(st.integers(0, n_accounts - 1))
            engine.set_book(changed_book(data, engine.books[i], n_assets))
            drift_scale[i] = 0.0  # set_book recomputes the account exactly
        drift_scale = np.maximum(drift_scale, current_scale())
        assert_matches_full_recompute(engine, drift_scale)


def random_book_engine(rng: np.random.Generator, n_accounts: int, n_assets: int) -> RiskEngine:
    tiers = Tiers((0.0, 5e4, 5e5), (0.95, 0.9, 0.7))
    books = []
    for i in range(n_accounts):
        model = MODELS[i % 4]
        exps = {}
        for a in ASSETS[:n_assets]:
            if rng.random() < 0.6:
                size = float(rng.normal(0, 5)) if model == "unified" else 0.0
                exps[a] = Exposure(float(rng.uniform(0, 50)), float(rng.uniform(0, 20)), size,
                                   size * float(rng.uniform(50, 150)), abs(size) * 0.01)
        weights = {a: tiers if k % 2 else Tiers.flat(0.8) for k, a in enumerate(ASSETS[:n_assets])}
        b = book(f"r{i}", model, exps, weights, 0.8 if model == "ltv" else 1.1)
        if model == "unified":
            b = replace(b, borrow_tiers={a: Tiers.flat(0.05, "qty") for a in exps})
        books.append(b)
    return RiskEngine(books, ASSETS[:n_assets])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_resync_after_many_ticks_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    engine = random_book_engine(rng, 40, 5)
    prices = np.full(5, 100.0)
    for t in range(5000):
        k = int(rng.integers(0, 5))
        prices[k] *= math.exp(rng.normal(0, 0.05))
        engine.apply(k, float(prices[k]), t)
    before = (engine.num.copy(), engine.den.copy(), engine.equity.copy(), engine.health.copy())
    assert np.isfinite(before[3]).any()
    engine.resync()
    for old, new in zip(before, (engine.num, engine.den, engine.equity, engine.health)):
        np.testing.assert_allclose(new, old, rtol=REL, atol=1e-6)  # values are 1e2..1e6
    assert_matches_full_recompute(engine)


# -- hand-computed cases per model ---------------------------------------------------------------
def engine_with(b: AccountBook, prices: dict[str, float]) -> RiskEngine:
    assets = sorted({a for a in b.exposures} | set(prices))
    engine = RiskEngine([b], assets)
    for a, p in prices.items():
        engine.apply(engine.asset_index[a], p, 1)
    return engine


def test_aave_health_factor():
    # Aave v3: HF = sum(collateral_i * liquidation_threshold_i) / total debt
    # 10 ETH @ 2000 at LT 0.825 = 16,500; 1 BTC @ 60,000 at LT 0.78 = 46,800
    # debt 30,000 USDC @ 1 -> HF = 63,300 / 30,000 = 2.11
    b = book("aave", "health_factor",
             {"ETH": Exposure(qty=10), "BTC": Exposure(qty=1), "USDC": Exposure(debt=30_000)},
             {"ETH": Tiers.flat(0.825), "BTC": Tiers.flat(0.78), "USDC": Tiers.flat(0.9)})
    engine = engine_with(b, {"ETH": 2000, "BTC": 60_000, "USDC": 1.0})
    assert engine.num[0] == pytest.approx(63_300)
    assert engine.den[0] == pytest.approx(30_000)
    assert engine.health[0] == pytest.approx(2.11)
    # equity = 20,000 + 60,000 - 30,000 = 50,000 (weights do not touch equity)
    assert engine.equity[0] == pytest.approx(50_000)
    assert to_native("health_factor", 1.0, 2.11) == 2.11
    # ETH falls to 1000: 8,250 + 46,800 = 55,050 / 30,000 = 1.835
    engine.apply(engine.asset_index["ETH"], 1000, 2)
    assert engine.health[0] == pytest.approx(1.835)


def test_ltv_loan_and_native_conversion():
    # CeFi loan: 2 BTC @ 50,000 at 90% = 90,000 weighted collateral; debt 60,000 USDT
    # LTV = 60,000 / 90,000 = 0.6667; liquidation LTV 0.85 -> h = 0.85 / 0.6667 = 1.275
    b = book("loan", "ltv", {"BTC": Exposure(qty=2), "USDT": Exposure(debt=60_000)},
             {"BTC": Tiers.flat(0.9)}, param=0.85)
    engine = engine_with(b, {"BTC": 50_000, "USDT": 1.0})
    h = float(engine.health[0])
    assert h == pytest.approx(1.275)
    assert to_native("ltv", 0.85, h) == pytest.approx(60_000 / 90_000)
    assert from_native("ltv", 0.85, 60_000 / 90_000) == pytest.approx(h)
    # liquidation exactly when LTV reaches 0.85: BTC at 60,000 / (0.85 * 0.9 * 2) = 39,215.686
    engine.apply(engine.asset_index["BTC"], 60_000 / (0.85 * 0.9 * 2), 2)
    assert engine.health[0] == pytest.approx(1.0)
    assert to_native("ltv", 0.85, 1.0) == pytest.approx(0.85)
    # round trips on the other models
    assert from_native("margin_level", 1.1, to_native("margin_level", 1.1, 1.4)) == pytest.approx(1.4)
    assert from_native("unified", 1.0, to_native("unified", 1.0, 2.5)) == pytest.approx(2.5)
    assert to_native("ltv", 0.85, 0.0) == math.inf  # no collateral left: LTV unbounded


def test_binance_cross_margin_level_ignores_weights():
    # Binance classic cross margin: margin level = total asset value / total liabilities,
    # liquidation at 1.1. 1 BTC @ 60,000 + 5,000 USDT held, 40,000 USDT borrowed:
    # ML = 65,000 / 40,000 = 1.625 -> h = 1.625 / 1.1 = 1.47727. The 0.5 weight is ignored.
    half = Tiers.flat(0.5)
    b = book("cross", "margin_level", {"BTC": Exposure(qty=1), "USDT": Exposure(qty=5_000, debt=40_000)},
             {"BTC": half, "USDT": half}, param=1.1)
    engine = engine_with(b, {"BTC": 60_000, "USDT": 1.0})
    assert engine.health[0] == pytest.approx(1.625 / 1.1)
    assert to_native("margin_level", 1.1, float(engine.health[0])) == pytest.approx(1.625)
    # sell 0.5 BTC for 30,000 USDT inside the account: assets 30,000 + 35,000 = 65,000, ML unchanged
    sold = b.with_exposure("BTC", Exposure(qty=0.5)).with_exposure("USDT", Exposure(qty=35_000, debt=40_000))
    engine.set_book(sold)
    assert engine.health[0] == pytest.approx(1.625 / 1.1)
    # repay 10,000 USDT: assets 55,000 / liabilities 30,000 = 1.8333 -> h = 1.6667
    engine.set_book(sold.with_exposure("USDT", Exposure(qty=25_000, debt=30_000)))
    assert to_native("margin_level", 1.1, float(engine.health[0])) == pytest.approx(55_000 / 30_000)


def test_bybit_unified_maintenance_margin_rate():
    # Bybit UTA: margin balance = sum(collateral * value ratio) - liabilities + perp uPnL
    # BTC: 1 @ 60,000 at ratio 0.95 = 57,000; USDT: 10,000 held, 20,000 borrowed (borrow MMR 5%)
    # ETH perp: long 2 @ entry 3,000, mark 2,800, MMR 1% -> uPnL = 5,600 - 6,000 = -400
    # margin balance = 57,000 + 10,000 - 20,000 - 400 = 46,600
    # MM = 2 * 2,800 * 0.01 + 20,000 * 1 * 0.05 = 56 + 1,000 = 1,056
    # MM rate = 1,056 / 46,600 = 2.266%; h = 1 / MM rate = 44.129
    b = book("uta", "unified", {
        "BTC": Exposure(qty=1),
        "USDT": Exposure(qty=10_000, debt=20_000),
        "ETH": Exposure(perp_size=2, perp_cost=6_000, perp_mm=2 * 0.01),
    }, {"BTC": Tiers.flat(0.95)})
    b = replace(b, borrow_tiers={"USDT": Tiers.flat(0.05, "qty")})
    engine = engine_with(b, {"BTC": 60_000, "USDT": 1.0, "ETH": 2_800})
    assert engine.num[0] == pytest.approx(46_600)
    assert engine.den[0] == pytest.approx(1_056)
    assert engine.health[0] == pytest.approx(46_600 / 1_056)
    assert to_native("unified", 1.0, float(engine.health[0])) == pytest.approx(1_056 / 46_600)
    # equity (unweighted) = 60,000 + 10,000 - 20,000 - 400 = 49,600
    assert engine.equity[0] == pytest.approx(49_600)
    # ETH mark 2,500: uPnL -1,000, MM 50 + 1,000: (57,000 - 10,000 - 1,000) / 1,050 = 43.81
    engine.apply(engine.asset_index["ETH"], 2_500, 2)
    assert engine.health[0] == pytest.approx(46_000 / 1_050)


def test_progressive_tier_crossing():
    # tiers: the first 1M of value at 0.95, above at 0.90
    # 400 ETH @ 3,000 = 1.2M -> 1,000,000 * 0.95 + 200,000 * 0.90 = 950,000 + 180,000 = 1,130,000
    tiers = tiers_of([Tier(up_to=1_000_000, weight=0.95), Tier(weight=0.90)])
    assert tiers.apply(1_200_000.0) == pytest.approx(1_130_000)
    assert tiers.apply(800_000.0) == pytest.approx(760_000)
    np.testing.assert_allclose(tiers.apply(np.array([0.0, 1e6, 1.2e6])), [0.0, 950_000, 1_130_000])
    assert tiers.marginal(999_999) == 0.95 and tiers.marginal(1_200_000) == 0.90  # at price 1: value = qty
    b = book("tier", "health_factor", {"ETH": Exposure(qty=400), "USDT": Exposure(debt=1_000_000)},
             {"ETH": tiers})
    engine = engine_with(b, {"ETH": 2_000, "USDT": 1.0})
    # 400 * 2,000 = 800,000, all in the first band: 760,000 / 1,000,000
    assert engine.health[0] == pytest.approx(0.76)
    engine.apply(engine.asset_index["ETH"], 3_000, 2)  # the tick crosses into the second band
    assert engine.num[0] == pytest.approx(1_130_000)
    assert engine.health[0] == pytest.approx(1.13)
    assert evaluate(b, engine.price_map()).health == pytest.approx(1.13)


def test_health_edge_cases():
    assert health_of(1.0, 5.0, 0.0) == math.inf
    assert health_of(1.0, -5.0, 0.0) == -math.inf
    np.testing.assert_array_equal(health_of(1.0, np.array([1.0, -1.0, 2.0]), np.array([0.0, 0.0, 4.0])),
                                  [math.inf, -math.inf, 0.5])
    # an unknown price is unknown health, never "liquidated"
    assert math.isnan(health_of(1.0, math.nan, math.nan))
    assert math.isnan(health_of(1.0, np.array([math.nan]), np.array([math.nan]))[0])
    b = book("x", "health_factor", {"BTC": Exposure(qty=1), "ETH": Exposure(debt=1)})
    assert math.isnan(evaluate(b, {"BTC": 100.0, "ETH": math.nan}).health)
    # an emptied asset does not need a price
    emptied = b.with_exposure("ETH", Exposure())
    assert evaluate(emptied, {"BTC": 100.0, "ETH": math.nan}).health == math.inf
    assert evaluate(emptied, {"BTC": 100.0}).equity == 100.0
    assert exposure_terms(b, "BTC", 100.0) == (100.0, 0.0, 100.0)


# -- the tick path's bookkeeping ---------------------------------------------------------------
def small_engine() -> RiskEngine:
    books = [
        book("a", "health_factor", {"BTC": Exposure(qty=1), "USDT": Exposure(debt=10_000)}),
        book("b", "health_factor", {"ETH": Exposure(qty=10), "USDT": Exposure(debt=5_000)}),
        book("c", "health_factor", {"BTC": Exposure(qty=2), "ETH": Exposure(qty=1), "USDT": Exposure(debt=1)}),
        book("d", "health_factor", {"USDT": Exposure(qty=100)}),
    ]
    return RiskEngine(books, ["BTC", "ETH", "USDT", "DOGE"], {"USDT": 1.0})


def test_apply_returns_exactly_the_holders():
    engine = small_engine()
    assert sorted(engine.apply(0, 50_000, 10).tolist()) == [0, 2]
    assert sorted(engine.apply(1, 3_000, 10).tolist()) == [1, 2]
    h = engine.health.copy()
    assert len(engine.apply(3, 0.1, 11)) == 0  # DOGE: nobody holds it
    np.testing.assert_array_equal(engine.health, h)
    assert engine.price_of("DOGE") == 0.1


def test_accounts_unknown_until_every_priced_asset_has_a_price():
    engine = small_engine()
    # USDT is fixed: only d (USDT alone) is known from the start
    assert np.isnan(engine.health[:3]).all()
    assert engine.health[3] == math.inf  # no debt
    engine.apply(0, 50_000, 10)
    assert engine.health[0] == pytest.approx(5.0)  # 50,000 / 10,000
    assert math.isnan(engine.health[1]) and math.isnan(engine.health[2])  # still waiting for ETH
    engine.apply(1, 3_000, 11)
    assert engine.health[1] == pytest.approx(6.0)  # 30,000 / 5,000
    assert engine.health[2] == pytest.approx(103_000)  # 103,000 / 1
    engine.apply(1, 2_000, 12)  # a second price is not a "first" one: counts stay right
    assert engine.health[1] == pytest.approx(4.0)
    assert not np.isnan(engine.health).any()


def test_set_book_adding_an_unpriced_asset_makes_the_account_unknown():
    engine = small_engine()
    engine.apply(0, 50_000, 10)
    a = engine.books[0]
    engine.set_book(a.with_exposure("DOGE", Exposure(qty=1000)))
    assert math.isnan(engine.health[0])
    engine.apply(3, 0.1, 11)
    assert engine.health[0] == pytest.approx(50_100 / 10_000)
    engine.set_book(engine.books[0].with_exposure("DOGE", Exposure()))  # emptied again
    assert engine.health[0] == pytest.approx(5.0)
    assert len(engine.apply(3, 0.2, 12)) == 0


def test_contract_config_hand_computed_health():
    settings = load_settings(CONTRACT)
    books = build_books(settings)
    fixed = {n: float(a.price) for n, a in settings.assets.items() if a.symbol is None}
    assets = list(settings.assets)
    engine = RiskEngine(books, assets, fixed)
    assert math.isnan(engine.health[0])
    engine.apply(engine.asset_index["BTC"], 60_000, 1_000)
    assert math.isnan(engine.health[0])  # ETH not priced yet
    engine.apply(engine.asset_index["ETH"], 3_000, 2_000)
    # BTC 1 * 60,000 * 0.95 = 57,000; ETH 10 * 3,000 at the account override 0.825 = 24,750
    # (not the asset's tiers, which would give 0.95); debt 50,000 USDT
    # h = 81,750 / 50,000 = 1.635; equity = 60,000 + 30,000 - 50,000 = 40,000
    assert engine.health[0] == pytest.approx(1.635)
    assert engine.equity[0] == pytest.approx(40_000)
    assert evaluate(engine.books[0], engine.price_map()).health == pytest.approx(1.635)
    engine.apply(engine.asset_index["BTC"], 40_000, 3_000)
    # 38,000 + 24,750 = 62,750 / 50,000 = 1.255
    assert engine.health[0] == pytest.approx(1.255)


def test_stale_accounts_and_assets():
    engine = small_engine()
    fixed = np.array([False, False, True, False])
    stale_after = np.full(4, 60_000.0)
    # nothing priced yet: a, b, c hold unpriced volatile assets; d holds only the fixed USDT
    np.testing.assert_array_equal(engine.stale_accounts(0, stale_after, fixed), [True, True, True, False])
    assert engine.stale_assets_of(2, 0, 60_000, fixed) == ["BTC", "ETH"]
    engine.apply(0, 50_000, 1_000)
    engine.apply(1, 3_000, 30_000)
    np.testing.assert_array_equal(engine.stale_accounts(61_000, stale_after, fixed), [False] * 4)
    # 61,001 ms: BTC is 60,001 ms old -> stale; ETH (31,001 ms) fresh
    np.testing.assert_array_equal(engine.stale_accounts(61_001, stale_after, fixed), [True, False, True, False])
    assert engine.stale_assets_of(2, 61_001, 60_000, fixed) == ["BTC"]
    assert engine.stale_assets_of(1, 61_001, 60_000, fixed) == []
    # per-account thresholds: b tolerates only 10 s
    per_account = np.array([60_000.0, 10_000.0, 60_000.0, 1.0])
    np.testing.assert_array_equal(engine.stale_accounts(50_000, per_account, fixed), [False, True, False, False])
    # start-up grace: an asset never priced counts as seen at since_ms
    fresh = small_engine()
    np.testing.assert_array_equal(fresh.stale_accounts(59_000, stale_after, fixed, since_ms=0), [False] * 4)
    assert fresh.stale_assets_of(2, 59_000, 60_000, fixed, since_ms=0) == []
    np.testing.assert_array_equal(fresh.stale_accounts(60_001, stale_after, fixed, since_ms=0),
                                  [True, True, True, False])
    assert fresh.stale_assets_of(2, 60_001, 60_000, fixed, since_ms=0) == ["BTC", "ETH"]
    # the fixed USDT is never stale, however late it is
    assert engine.stale_assets_of(3, 10**12, 1.0, fixed) == []
    assert not engine.stale_accounts(10**12, np.ones(4), fixed)[3]
