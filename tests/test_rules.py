"""Levels -> events: hysteresis, confirmation and cooldown in event time, daily caps,
escalation, staleness, and the native-unit conversion of levels."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import numpy as np
import pytest

from monitor.accounts.static import account_scale, build_books
from monitor.config import AccountSettings, LevelSettings, load_settings
from monitor.errors import ConfigError
from monitor.model import EventKind, LevelEvent
from monitor.risk.engine import RiskEngine
from monitor.risk.portfolio import AccountBook, Exposure
from monitor.rules import DAY_MS, RebalanceRequest, Rules, build_account_rules

CONTRACT = Path(__file__).parent / "configs" / "contract.toml"
S = 1000  # ms per second
NONE = np.array([], dtype=np.int64)  # an evaluation that touches no account (timers still pop)


@pytest.fixture(autouse=True)
def deadline():
    """Rules must never loop: a runaway evaluate fails the test instead of hanging it."""
    def boom(*_):
        raise TimeoutError("Rules.evaluate did not return")
    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


# -- helpers ---------------------------------------------------------------------------
WARN = dict(name="warn", health=1.3)
ACT = dict(name="act", health=1.15, action="rebalance", strategy="repay_debt", target=1.4, cooldown_s=300)
CRIT = dict(name="critical", health=1.05, action="rebalance", strategy="repay_debt", target=1.5, cooldown_s=60)


def account(*levels: dict, model="health_factor", **kw) -> AccountSettings:
    return AccountSettings(name=kw.pop("name", "acc"), model=model, levels=[LevelSettings(**lv) for lv in levels], **kw)


class OneAccount(Rules):
    last_h = math.nan


def rules_for(*levels: dict, **kw) -> OneAccount:
    acc = account(*levels, **kw)
    return OneAccount([build_account_rules(acc, account_scale(acc)[1])])


def step(rules: Rules, h: float | None, t_ms: int) -> list:
    """Account 0 moves to health h at time t; h None: an evaluation that does not touch it
    (another account's tick), with account 0's health where it last was, as in the engine."""
    if h is None:
        out = rules.evaluate(NONE, np.array([rules.last_h]), t_ms)
    else:
        rules.last_h = h
        out = rules.evaluate(np.array([0]), np.array([h]), t_ms)
    for req in reqs(out):  # as the Monitor does once the plan is settled or found ineffective
        rules.release(req.account)
    return out


def evs(out: list, kind: EventKind | None = None) -> list[LevelEvent]:
    return [e for e in out if isinstance(e, LevelEvent) and (kind is None or e.kind == kind)]


def reqs(out: list) -> list[RebalanceRequest]:
    return [r for r in out if isinstance(r, RebalanceRequest)]


def kinds(out: list) -> list[tuple[str, str]]:
    return [(e.kind.value, e.level) if isinstance(e, LevelEvent) else ("request", e.level.name) for e in out]


# -- firing and hysteresis -------------------------------------------------------------------
def test_level_fires_on_breach_once():
    r = rules_for(WARN)
    assert step(r, 1.35, 0) == []
    out = step(r, 1.29, 1 * S)
    assert kinds(out) == [("firing", "warn")]
    e = out[0]
    assert (e.account, e.health, e.native, e.ts_ms, e.dry_run) == ("acc", 1.29, 1.29, 1000, True)
    assert step(r, 1.25, 2 * S) == []  # still breached: no repeat
    assert step(r, 1.10, 3 * S) == []


def test_hysteresis_no_flapping_and_resolved_carries_min_and_since():
    r = rules_for(dict(WARN, hysteresis=0.05))  # clears above 1.3 * 1.05 = 1.365
    assert kinds(step(r, 1.25, 1 * S)) == [("firing", "warn")]
    for t, h in enumerate([1.31, 1.29, 1.36, 1.20, 1.364, 1.30, 1.3649], start=2):
        assert step(r, h, t * S) == [], f"flapped at {h}"
    out = step(r, 1.37, 20 * S)
    assert kinds(out) == [("resolved", "warn")]
    assert out[0].min_health == 1.20 and out[0].since_ms == 1 * S and out[0].health == 1.37
    assert step(r, 1.32, 21 * S) == []  # above the threshold: nothing
    out = step(r, 1.29, 22 * S)  # a real new breach after clearing fires again
    assert kinds(out) == [("firing", "warn")]
    out = step(r, 1.5, 23 * S)
    assert out[0].min_health == 1.29 and out[0].since_ms == 22 * S  # the new episode's own figures


# -- confirmation in event time -------------------------------------------------------------
def test_wick_shorter_than_confirm_does_not_fire_or_act():
    r = rules_for(dict(WARN, confirm_s=30), dict(ACT, confirm_s=30))
    assert step(r, 1.10, 0) == []  # below both, awaiting confirmation
    assert step(r, 1.40, 10 * S) == []  # recovered after 10 s
    for t in (30, 31, 60, 600):
        assert step(r, None, t * S) == []
        assert step(r, 1.40, t * S) == []


def test_wick_recovering_inside_the_hysteresis_band_does_not_fire():
    # hysteresis delays *clearing* a firing level; a breach awaiting confirmation ends as
    # soon as health is back above the threshold (1.31 > 1.3, inside the band up to 1.326)
    r = rules_for(dict(WARN, confirm_s=30))
    assert step(r, 1.29, 0) == []
    assert step(r, 1.31, 5 * S) == []
    assert step(r, None, 30 * S) == []
    assert step(r, 1.31, 40 * S) == []
    # a new breach starts a new window
    assert step(r, 1.28, 50 * S) == []
    assert step(r, None, 79_999) == []
    assert kinds(step(r, None, 80 * S)) == [("firing", "warn")]


def test_breach_lasting_confirm_fires_exactly_once_at_the_next_evaluation():
    r = rules_for(dict(WARN, confirm_s=30))
    assert step(r, 1.25, 0) == []
    assert step(r, 1.24, 10 * S) == []
    assert step(r, None, 29_999) == []
    out = step(r, None, 30 * S)  # the timer pops on an evaluation that touches no account
    assert kinds(out) == [("firing", "warn")]
    assert out[0].ts_ms == 30 * S and out[0].health == 1.24
    for t in (31, 45, 400):
        assert step(r, None, t * S) == []
    assert step(r, 1.2, 500 * S) == []


def test_confirmation_due_while_no_evaluation_fires_at_the_first_later_one():
    r = rules_for(dict(WARN, confirm_s=30))
    step(r, 1.25, 0)
    out = step(r, None, 95 * S)
    assert kinds(out) == [("firing", "warn")] and out[0].ts_ms == 95 * S
    assert step(r, None, 96 * S) == []


def test_confirm_zero_fires_and_acts_at_once():
    r = rules_for(dict(ACT, confirm_s=0))
    out = step(r, 1.1, 7 * S)
    assert kinds(out) == [("firing", "act"), ("request", "act")]
    req = reqs(out)[0]
    assert (req.account, req.ts_ms, req.notional_budget, req.level.target) == (0, 7 * S, None, 1.4)
    assert req.level.strategy == "repay_debt"


# -- actions: cooldown, caps, escalation -------------------------------------------------------------
def test_cooldown_holds_a_second_request_and_the_timer_re_requests():
    r = rules_for(ACT)  # cooldown 300 s, clears above 1.15 * 1.02 = 1.173
    assert len(reqs(step(r, 1.10, 0))) == 1
    assert step(r, 1.05, 100 * S) == []
    assert step(r, None, 299_999) == []
    out = step(r, None, 300 * S)
    assert kinds(out) == [("request", "act")] and out[0].ts_ms == 300 * S
    assert step(r, 1.16, 400 * S) == []  # above the threshold, inside the band: firing, no action due
    assert step(r, None, 600 * S) == []  # the cooldown timer finds no breach: no request
    assert kinds(step(r, 1.18, 700 * S)) == [("resolved", "act")]


def test_cooldown_zero_requests_once_per_evaluation_and_does_not_loop():
    r = rules_for(dict(ACT, cooldown_s=0))
    out = step(r, 1.10, 0)
    assert kinds(out) == [("firing", "act"), ("request", "act")]
    out = step(r, None, 1)  # still breached at the next evaluation: act again
    assert kinds(out) == [("request", "act")]
    assert kinds(step(r, 1.2, 2)) == [("resolved", "act")]


def test_daily_action_cap_emits_one_capped_event_then_resets_next_day():
    r = rules_for(WARN, dict(ACT, cooldown_s=60), max_actions_per_day=2)
    assert kinds(step(r, 1.10, 0)) == [("firing", "warn"), ("firing", "act"), ("request", "act")]
    r.record_action(0, 100.0)
    assert kinds(step(r, None, 60 * S)) == [("request", "act")]
    r.record_action(0, 100.0)
    out = step(r, None, 120 * S)
    assert kinds(out) == [("capped", "act")] and reqs(out) == []
    later = []
    for t, h in [(180, 1.10), (200, 1.20), (210, 1.10), (240, 1.05), (300, None), (3600, None)]:
        later += step(r, h, t * S)  # re-breaches and timers: no request, no second CAPPED
    assert evs(later, EventKind.CAPPED) == [] and reqs(later) == []
    out = step(r, None, DAY_MS + 5 * S)  # a new day (event time): the cap resets
    assert kinds(out) == [("request", "act")]


def test_daily_notional_cap_shrinks_the_budget_then_caps_once():
    r = rules_for(dict(ACT, cooldown_s=60, max_notional=3000), max_notional_per_day=5000)
    out = step(r, 1.10, 0)
    assert reqs(out)[0].notional_budget == 3000  # min(per action 3,000, daily 5,000)
    r.record_action(0, 3000)
    out = step(r, None, 60 * S)
    assert reqs(out)[0].notional_budget == 2000  # 5,000 - 3,000 left today
    r.record_action(0, 2000)
    out = step(r, None, 120 * S)
    assert kinds(out) == [("capped", "act")]
    assert step(r, None, 180 * S) == [] and step(r, 1.05, 240 * S) == []
    out = step(r, None, DAY_MS)
    assert reqs(out)[0].notional_budget == 3000


def test_escalation_and_de_escalation_with_resolved_per_level():
    r = rules_for(WARN, ACT, CRIT)
    assert kinds(step(r, 1.25, 0)) == [("firing", "warn")]
    assert kinds(step(r, 1.10, 10 * S)) == [("firing", "act"), ("request", "act")]
    out = step(r, 1.00, 100 * S)  # critical's own 60 s cooldown has passed since the last action
    assert kinds(out) == [("firing", "critical"), ("request", "critical")]
    assert reqs(out)[0].level.target == 1.5
    out = step(r, 1.08, 200 * S)  # above critical's band (1.05 * 1.02 = 1.071)
    assert kinds(out) == [("resolved", "critical")]
    assert (out[0].since_ms, out[0].min_health) == (100 * S, 1.00)
    out = step(r, 1.18, 300 * S)  # above act's band (1.173)
    assert kinds(out) == [("resolved", "act")] and out[0].since_ms == 10 * S
    out = step(r, 1.40, 400 * S)
    assert kinds(out) == [("resolved", "warn")]
    assert (out[0].since_ms, out[0].min_health) == (0, 1.00)
    assert step(r, None, 1000 * S) == []


def test_a_crash_through_every_level_acts_once_at_the_deepest():
    r = rules_for(WARN, ACT, CRIT)
    out = step(r, 1.00, 0)
    assert kinds(out)[:3] == [("firing", "warn"), ("firing", "act"), ("firing", "critical")]
    assert [q.level.name for q in reqs(out)] == ["critical"]  # one plan, at the critical target
    # act's level is still breached; the account's cooldown holds it
    assert reqs(step(r, 1.01, 30 * S)) == []


def test_depth_ordering_does_not_depend_on_config_order():
    r = rules_for(CRIT, WARN, ACT)  # written deepest first: rules sort by threshold
    assert [lv.name for lv in r.accounts[0].levels] == ["warn", "act", "critical"]
    assert kinds(step(r, 1.2, 0)) == [("firing", "warn")]


# -- staleness --------------------------------------------------------------------------
def stale_setup():
    """BTC 1 + ETH 10 against 60,000 USDT of debt; USDT at a fixed price."""
    acc = account(WARN, dict(ACT, cooldown_s=60), stale_after_s=60)
    b = AccountBook("acc", "health_factor", 1.0, 1.0,
                    {"BTC": Exposure(qty=1), "ETH": Exposure(qty=10), "USDT": Exposure(debt=60_000)})
    engine = RiskEngine([b], ["BTC", "ETH", "USDT"], {"USDT": 1.0})
    rules = Rules([build_account_rules(acc, 1.0)], dry_run=False)
    fixed = np.array([False, False, True])
    return engine, rules, fixed


def tick(engine: RiskEngine, rules: Rules, fixed, asset: str, price: float, t: int) -> list:
    """What the core does per tick: apply, settle staleness, then rules."""
    idx = engine.apply(engine.asset_index[asset], price, t)
    mask = engine.stale_accounts(t, rules.stale_after_ms, fixed)
    out = rules.update_stale(mask, engine.health, t,
                             lambda i: ((a := engine.stale_assets_of(i, t, rules.stale_after_ms[i], fixed)), None,
                                        "no price for " + ", ".join(a)))
    return out + rules.evaluate(idx, engine.health, t)


def test_stale_once_fresh_once_and_no_trading_on_stale_prices():
    engine, rules, fixed = stale_setup()
    assert tick(engine, rules, fixed, "BTC", 60_000, 0) != []  # STALE: ETH has no price yet
    out = tick(engine, rules, fixed, "ETH", 3_000, 1 * S)  # h = 90,000 / 60,000 = 1.5
    assert kinds(out) == [("fresh", "stale")]
    assert engine.health[0] == pytest.approx(1.5)
    assert tick(engine, rules, fixed, "BTC", 60_000, 50 * S) == []
    out = tick(engine, rules, fixed, "BTC", 60_000, 62 * S)  # ETH last seen 61 s ago
    assert kinds(out) == [("stale", "stale")]
    assert out[0].stale_assets == ("ETH",) and "ETH" in out[0].detail and out[0].dry_run is False
    # the breach is reported, but a stale account never gets a RebalanceRequest
    out = tick(engine, rules, fixed, "BTC", 35_000, 65 * S)  # (35,000 + 30,000) / 60,000 = 1.0833
    assert engine.health[0] == pytest.approx(65_000 / 60_000)
    assert kinds(out) == [("firing", "warn"), ("firing", "act")]
    assert reqs(out + tick(engine, rules, fixed, "BTC", 34_000, 200 * S)) == []
    assert evs(tick(engine, rules, fixed, "BTC", 34_000, 201 * S), EventKind.STALE) == []  # once
    out = tick(engine, rules, fixed, "ETH", 3_000, 210 * S)  # fresh again: the held-back action goes out
    assert kinds(out) == [("fresh", "stale"), ("request", "act")]
    assert out[0].stale_assets == ()
    assert evs(tick(engine, rules, fixed, "ETH", 3_000, 211 * S), EventKind.FRESH) == []  # once


def test_contract_config_through_engine_and_rules():
    settings = load_settings(CONTRACT)
    books = build_books(settings)
    fixed_prices = {n: float(a.price) for n, a in settings.assets.items() if a.symbol is None}
    engine = RiskEngine(books, list(settings.assets), fixed_prices)
    rules = Rules([build_account_rules(settings.accounts[0], books[0].param)])
    fixed = np.array([a in fixed_prices for a in engine.assets])
    assert kinds(tick(engine, rules, fixed, "ETH", 3_000, 0)) == [("stale", "stale")]  # BTC: no price yet
    # h = 81,750 / 50,000 = 1.635
    assert kinds(tick(engine, rules, fixed, "BTC", 60_000, 0)) == [("fresh", "stale")]
    # BTC 40,000: (38,000 + 24,750) / 50,000 = 1.255 < warn 1.3
    assert kinds(tick(engine, rules, fixed, "BTC", 40_000, 10 * S)) == [("firing", "warn")]
    # BTC 30,000: (28,500 + 24,750) / 50,000 = 1.065 < act 1.15, confirmed after 30 s
    assert tick(engine, rules, fixed, "BTC", 30_000, 20 * S) == []
    assert engine.health[0] == pytest.approx(1.065)
    out = tick(engine, rules, fixed, "ETH", 3_000, 50 * S)
    assert kinds(out) == [("firing", "act"), ("request", "act")]
    assert reqs(out)[0].level.target == 1.4


# -- build_account_rules ---------------------------------------------------------------------
def test_native_units_convert_to_health():
    ltv = account(dict(name="call", ltv=0.75, action="rebalance", strategy="repay_debt", target_ltv=0.6,
                       hysteresis=0.1, confirm_s=1.5, cooldown_s=20),
                  model="ltv", liquidation_ltv=0.85)
    r = build_account_rules(ltv, account_scale(ltv)[1])
    lv = r.levels[0]
    assert lv.threshold == pytest.approx(0.85 / 0.75)  # 1.1333
    assert lv.target == pytest.approx(0.85 / 0.6)  # 1.4167
    assert lv.clear == pytest.approx(0.85 / 0.75 * 1.1)
    assert (lv.confirm_ms, lv.cooldown_ms) == (1500, 20_000)

    uta = account(dict(name="mm", mm_rate=0.8), dict(name="act", mm_rate=0.9, action="rebalance",
                  strategy="reduce_position", target_mm_rate=0.5), model="unified")
    r = build_account_rules(uta, account_scale(uta)[1])
    assert [lv.name for lv in r.levels] == ["mm", "act"]  # MM rate 80% is the healthier level
    assert r.levels[0].threshold == pytest.approx(1.25)  # 1 / 0.8
    assert r.levels[1].threshold == pytest.approx(1 / 0.9) and r.levels[1].target == pytest.approx(2.0)

    cross = account(dict(name="ml", margin_level=1.3, action="rebalance", strategy="repay_debt",
                         target_margin_level=1.5), model="margin_level", liquidation_level=1.1)
    r = build_account_rules(cross, account_scale(cross)[1])
    assert r.levels[0].threshold == pytest.approx(1.3 / 1.1)
    assert r.levels[0].target == pytest.approx(1.5 / 1.1)

    health_units = account(dict(name="h", health=1.2, action="rebalance", strategy="repay_debt", target=1.6),
                           model="ltv", liquidation_ltv=0.8)
    lv = build_account_rules(health_units, 0.8).levels[0]
    assert (lv.threshold, lv.target) == (1.2, 1.6)  # health needs no conversion


@pytest.mark.parametrize("level, model, extra", [
    (dict(ltv=0.75, target_ltv=0.8), "ltv", dict(liquidation_ltv=0.85)),  # a higher LTV is less healthy
    (dict(ltv=0.75, target_ltv=0.75), "ltv", dict(liquidation_ltv=0.85)),
    (dict(health=1.2, target=1.2), "health_factor", {}),
    (dict(health=1.2, target=1.1), "health_factor", {}),
    (dict(mm_rate=0.5, target_mm_rate=0.6), "unified", {}),
    (dict(margin_level=1.3, target_margin_level=1.2), "margin_level", dict(liquidation_level=1.1)),
])
def test_target_not_above_threshold_is_rejected(level, model, extra):
    acc = account(dict(name="act", action="rebalance", strategy="repay_debt", **level), model=model, **extra)
    with pytest.raises(ConfigError) as err:
        build_account_rules(acc, account_scale(acc)[1])
    msg = str(err.value)
    assert "acc" in msg and "act" in msg and "target" in msg and "\n" not in msg


def test_a_request_in_flight_is_not_repeated_until_released():
    r = rules_for(dict(ACT, cooldown_s=0))
    first = r.evaluate(np.array([0]), np.array([1.10]), 0)
    assert len(reqs(first)) == 1
    # Ticks keep coming while the plan executes: no second plan for the same account.
    for t in (1, 2, 3):
        assert reqs(r.evaluate(np.array([0]), np.array([1.09]), t)) == []
    r.release(0)
    assert len(reqs(r.evaluate(np.array([0]), np.array([1.09]), 4))) == 1
