"""The Monitor (engine + rules + strategies) as the daemon and replay drive it."""

from __future__ import annotations

import math
import warnings

import numpy as np

from monitor.config import parse_settings
from monitor.core import Monitor
from monitor.model import EventKind, LevelEvent, Plan, PriceTick
from strategies import default_registry

MIN = 60_000


ASSETS = {"BTC": {"price": "BTC/USDT", "weight": 0.9}, "ETH": {"price": "ETH/USDT", "weight": 0.8},
          "USDT": {"price": 1.0}}


def settings(levels: list[dict], model: str = "health_factor", **account) -> object:
    acc = {"name": "a", "model": model, "holdings": {"BTC": 1.0, "USDT": -40000}, "stale_after_s": 120,
           "levels": levels, **account}
    return parse_settings({"assets": ASSETS, "accounts": [acc]})


ACT = {"name": "act", "health": 1.2, "action": "rebalance", "strategy": "repay_debt", "target": 1.5}


def kinds(out: list) -> list:
    return [(o.level, o.kind) if isinstance(o, LevelEvent) else "plan" for o in out]


def test_breach_on_stale_prices_alerts_and_never_trades() -> None:
    m = Monitor(settings([ACT], holdings={"BTC": 1.0, "ETH": 5.0, "USDT": -50000}), default_registry())
    m.on_tick(PriceTick("ETH/USDT", 3000, 0))
    m.on_tick(PriceTick("BTC/USDT", 60000, 0))
    # ETH stops ticking; five minutes later BTC crashes: health is known only on a stale ETH price.
    out = m.on_tick(PriceTick("BTC/USDT", 45000, 5 * MIN))
    stale = [o for o in out if isinstance(o, LevelEvent) and o.kind == EventKind.STALE]
    assert [e.stale_assets for e in stale] == [("ETH",)]
    assert ("act", EventKind.FIRING) in kinds(out)
    assert "plan" not in kinds(out)


def test_fresh_prices_resume_held_back_action() -> None:
    m = Monitor(settings([ACT]), default_registry())
    m.on_tick(PriceTick("BTC/USDT", 60000, 0))
    m.now_ms = 5 * MIN
    m.check_stale()
    out = m.on_tick(PriceTick("BTC/USDT", 45000, 5 * MIN + 1000))  # fresh again and breached
    events = kinds(out)
    assert ("stale", EventKind.FRESH) in events
    assert "plan" in events


def test_plan_settles_and_verifies() -> None:
    m = Monitor(settings([ACT]), default_registry())
    out = m.on_tick(PriceTick("BTC/USDT", 50000, 0))  # 45000 / 40000 = 1.125 < 1.2
    plan = next(o for o in out if isinstance(o, Plan))
    assert plan.expected_health > plan.health_before
    from monitor.execution.paper import PaperExecutor
    ex = PaperExecutor({"BTC": (50000.0, 50000.0), "USDT": (1.0, 1.0)}.get, 0.001, 0.0005, lambda: 0)
    done = ex.execute_now(plan)
    settled = m.settle(plan, done)
    assert settled.event is None
    assert math.isclose(settled.health_after, 1.5, rel_tol=1e-6)


def test_ineffective_strategy_is_an_alert_not_an_action() -> None:
    # Health below the weight ratio: selling collateral to repay lowers health (0.9 * p < debt).
    m = Monitor(settings([ACT]), default_registry())
    out = m.on_tick(PriceTick("BTC/USDT", 40000, 0))  # 36000 / 40000 = 0.9
    assert ("act", EventKind.INEFFECTIVE) in kinds(out)
    assert "plan" not in kinds(out)


def test_status_reports_liquidation_price_and_distance() -> None:
    m = Monitor(settings([]), default_registry())
    m.on_tick(PriceTick("BTC/USDT", 60000, 0))
    st = m.status(0)
    assert math.isclose(st.health, 1.35)
    (btc,) = st.exposures
    # 0.9 * x = 40000 -> x = 44444.44; the distance is -25.9%
    assert math.isclose(btc.liquidation_price, 40000 / 0.9, rel_tol=1e-9)
    assert math.isclose(btc.distance_pct, (40000 / 0.9 / 60000 - 1) * 100, rel_tol=1e-9)
    assert btc.distance_sigma is None  # no volatility estimate yet


def test_distance_in_volatility_units_after_enough_bars() -> None:
    m = Monitor(settings([]), default_registry())
    for n in range(40):
        m.on_tick(PriceTick("BTC/USDT", 60000 * (1.01 if n % 2 else 0.99), n * MIN))
    (btc,) = m.status(0).exposures
    assert btc.distance_sigma is not None and btc.distance_sigma > 0
    vol = m.vol.daily(0)
    assert math.isclose(btc.distance_sigma, abs(math.log(btc.liquidation_price / btc.price)) / vol)


def test_assets_get_a_grace_period_for_their_first_price() -> None:
    m = Monitor(settings([ACT], holdings={"BTC": 1.0, "ETH": 5.0, "USDT": -50000}), default_registry())
    assert m.on_tick(PriceTick("BTC/USDT", 60000, 0)) == []  # ETH has not spoken yet: not stale at once
    m.now_ms = 121_000  # stale_after_s = 120 passed without an ETH price
    assert [e.stale_assets for e in m.check_stale()] == [("BTC", "ETH")]


def test_malformed_and_out_of_order_ticks_are_counted_and_skipped() -> None:
    m = Monitor(settings([ACT]), default_registry())
    m.on_tick(PriceTick("BTC/USDT", 60000, 10_000))
    bad = [PriceTick("BTC/USDT", float("nan"), 20_000), PriceTick("BTC/USDT", -1.0, 20_000),
           PriceTick("BTC/USDT", 50000, 20_000, 50010, 49990),  # crossed book
           PriceTick("BTC/USDT", 50000, 20_000, 50000, None),  # half a quote
           PriceTick("BTC/USDT", 1e-308, 20_000), PriceTick("BTC/USDT", 1e300, 20_000),  # would overflow ratios
           PriceTick("BTC/USDT", 50000, 20_000, 1e-308, 50000),
           PriceTick("BTC/USDT", 30000, 5_000)]  # older than the last tick
    for tick in bad:
        assert m.on_tick(tick) == []
    assert m.bad_ticks == len(bad)
    assert m.engine.price_of("BTC") == 60000 and math.isclose(m.engine.health[0], 1.35)
    m.on_tick(PriceTick("DOGE/USDT", 0.1, 30_000))  # a symbol nobody holds is not an error
    assert m.bad_ticks == len(bad)


def test_volatility_of_extreme_prices_stays_finite_and_quiet() -> None:
    from monitor.risk.volatility import VolatilityTracker
    vol = VolatilityTracker(1, bar_ms=1, min_bars=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy overflow warning would reach the user's terminal
        for n, price in enumerate([1e300, 1e-308, 1e300, 1e-308]):
            vol.update(0, price, n)
    assert math.isfinite(vol.daily(0))


def test_a_dust_debt_is_infinitely_healthy_without_a_warning() -> None:
    from monitor.risk.portfolio import health_of
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = health_of(1.0, np.array([1e10, 1.0]), np.array([1e-308, 2.0]))
    assert h.tolist() == [math.inf, 0.5]


def test_paper_fill_in_quote_units_when_the_quote_depegs() -> None:
    from monitor.execution.paper import PaperExecutor
    from monitor.model import Order
    quotes = {"BTC": (47_999.0, 48_001.0), "USDC": (0.8, 0.8)}
    ex = PaperExecutor(quotes.get, 0.001, 0.0005, lambda: 0)
    order = Order("BTC/USDC", "sell", 1.0, 59_000.0, "BTC", "USDC")
    # BTC at 48k dollars with USDC at 0.80 dollars: a sale fetches 60k USDC (less slippage)
    assert math.isclose(ex.fill_price(order), 47_999.0 * (1 - 0.0005) / 0.8)


def test_no_stale_alarm_before_the_first_tick_has_had_its_grace() -> None:
    m = Monitor(settings([ACT]), default_registry())
    m.now_ms = 1_700_000_000_000  # the daemon's first clock heartbeat, before any feed connected
    assert m.check_stale() == []
    m.now_ms += 121_000
    assert [e.kind for e in m.check_stale()] == [EventKind.STALE]


def test_the_stale_alert_carries_the_moment_prices_went_stale_not_when_it_was_noticed() -> None:
    """Instances sharing a store notice staleness on their own clocks; the alert's time (and so
    its outbox key) must be the same for all of them."""
    times = []
    for noticed_at in (130_000, 175_000):
        m = Monitor(settings([ACT]), default_registry())
        m.on_tick(PriceTick("BTC/USDT", 60000, 5_000))
        m.now_ms = noticed_at
        stale = [e for e in m.check_stale() if e.kind == EventKind.STALE]
        assert stale and stale[0].stale_assets == ("BTC",)
        times.append(stale[0].ts_ms)
    assert times == [5_000 + 120_000] * 2


T0 = 1_700_000_000_000


def test_an_account_never_priced_is_blind_from_the_start() -> None:
    """No tick ever arrives: the clock alone starts the grace, and what is missing is never summed."""
    m = Monitor(settings([ACT]), default_registry())
    m.now_ms = T0  # the daemon's first clock tick
    assert m.check_stale() == []
    st = m.status(0)
    assert math.isnan(st.health) and math.isnan(st.native) and math.isnan(st.equity)  # not -40000
    assert st.unpriced == ("BTC",) and not st.stale and m.blind().tolist() == [True]
    m.now_ms = T0 + 121_000
    stale = m.check_stale()
    assert [(e.kind, e.detail, e.ts_ms) for e in stale] == [(EventKind.STALE, "no price for BTC since start",
                                                             T0 + 120_000)]
    assert math.isnan(stale[0].health)
    m.on_tick(PriceTick("BTC/USDT", 60000, T0 + 122_000))
    assert m.status(0).equity == 20000 and m.status(0).unpriced == () and m.blind().tolist() == [False]


def test_the_stale_clock_never_starts_at_epoch_zero() -> None:
    m = Monitor(settings([ACT]), default_registry())
    assert m.check_stale() == [] and m.start_ms is None  # a reload before any tick or clock tick
    m.now_ms = T0
    assert m.check_stale() == []  # not "stale since 1970"
    assert m.start_ms == T0


def test_the_stale_detail_names_what_never_came_and_since_when_the_rest() -> None:
    m = Monitor(settings([ACT], holdings={"BTC": 1.0, "ETH": 5.0, "USDT": -50000}), default_registry())
    m.on_tick(PriceTick("BTC/USDT", 60000, T0))
    m.now_ms = T0 + 121_000
    (stale,) = m.check_stale()
    assert stale.stale_assets == ("BTC", "ETH")
    assert stale.detail == "no price for ETH since start; BTC since 2023-11-14T22:13:20.000Z"
