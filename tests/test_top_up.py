"""top_up: collateral moved in from the owner's reserve, solved for the target, on paper.

(On a venue, the transfer itself: tests/test_exchange_top_up.py.)
"""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config import parse_settings
from monitor.core import Monitor, check_strategies
from monitor.errors import ConfigError
from monitor.execution.paper import PaperExecutor
from monitor.model import Plan, PriceTick, Repay, Transfer
from monitor.persistence import restore, snapshot_of
from monitor.risk.portfolio import AccountBook, Exposure, evaluate
from monitor.risk.trades import apply_transfer
from monitor.risk.tiers import Tiers
from strategies import default_registry
from strategies.base import MarketView, PlanRequest
from strategies.top_up import TopUp

ASSETS = {"BTC": {"price": "BTC/USDT", "weight": 0.9}, "USDT": {"price": 1.0}}
MARKET = MarketView({"BTC": 40000.0, "USDT": 1.0}, {}, {}, frozenset({"USDT"}), 0.001, 0.0005)


def book(model: str = "ltv", reserve: float = 20000.0, usdt_weight: Tiers | None = None,
         usdt: Exposure | None = None) -> AccountBook:
    scale, param = {"ltv": (0.8, 0.8), "margin_level": (1 / 1.1, 1.1), "unified": (1.0, 1.0)}[model]
    exps = {"BTC": Exposure(qty=1.0), "USDT": usdt or Exposure(debt=30000.0)}
    weights = {"BTC": Tiers.flat(0.9), "USDT": usdt_weight or Tiers.flat(1.0)}
    borrow = {"USDT": Tiers.flat(0.05, "qty")} if model == "unified" else {}
    return AccountBook("a", model, scale, param, exps, weights, {"USDT": reserve}, borrow)


def request(b: AccountBook, target: float, **params) -> PlanRequest:
    return PlanRequest(b, MARKET, "act", target, 0, "USDT", None, params)


@pytest.mark.parametrize("model", ["ltv", "margin_level", "unified"])
def test_the_top_up_is_the_smallest_that_reaches_the_target(model) -> None:
    b = book(model)
    target = evaluate(b, MARKET.prices).health * 1.3
    plan = TopUp().plan(request(b, target, step=0.01))
    (t,) = plan.transfers
    assert t.asset == "USDT" and 0 < t.amount <= 20000
    assert evaluate(apply_transfer(b, t), MARKET.prices).health >= target * (1 - 1e-12)
    assert evaluate(apply_transfer(b, Transfer("USDT", t.amount - 0.01)), MARKET.prices).health < target
    assert math.isclose(plan.expected_health, evaluate(apply_transfer(b, t), MARKET.prices).health)
    assert not plan.orders and not plan.repays


def test_a_unified_account_nets_the_credit_against_the_liability_first() -> None:
    b = book("unified")
    after = apply_transfer(b, Transfer("USDT", 1000.0))
    assert after.exposures["USDT"] == Exposure(debt=29000.0)
    assert after.reserve == {"USDT": 19000.0}
    ltv = apply_transfer(book("ltv"), Transfer("USDT", 1000.0))
    assert (ltv.exposures["USDT"].qty, ltv.exposures["USDT"].debt) == (1000.0, 30000.0)  # kept gross


@given(st.floats(1.05, 3.0), st.floats(0.3, 1.0), st.floats(1000, 60000), st.sampled_from(["ltv", "unified"]))
def test_tiered_weights_are_solved_exactly(factor, upper_weight, band, model) -> None:
    # USDT counts 100% up to `band` of value, `upper_weight` above it: the root may lie past the kink.
    tiers = Tiers((0.0, band), (1.0, upper_weight))
    b = book(model, reserve=1e6, usdt_weight=tiers, usdt=Exposure(qty=5000.0, debt=30000.0) if model == "ltv" else None)
    target = evaluate(b, MARKET.prices).health * factor
    plan = TopUp().plan(request(b, target, step=0.01))
    if not plan.transfers:
        assert "cannot" in plan.note or "short" in plan.note
        return
    (t,) = plan.transfers
    assert evaluate(apply_transfer(b, t), MARKET.prices).health >= target * (1 - 1e-9)
    if t.amount > 0.02:
        assert evaluate(apply_transfer(b, Transfer("USDT", t.amount - 0.02)), MARKET.prices).health < target


def test_a_short_reserve_is_all_moved_and_says_so() -> None:
    b = book("ltv", reserve=500.0)
    plan = TopUp().plan(request(b, 5.0))
    assert plan.transfers == (Transfer("USDT", 500.0),)
    assert "falls short" in plan.note and plan.expected_health > plan.health_before


def test_max_amount_and_an_empty_reserve() -> None:
    b = book("ltv")
    assert TopUp().plan(request(b, 5.0, max_amount=250)).transfers == (Transfer("USDT", 250.0),)
    empty = TopUp().plan(request(book("ltv", reserve=0.0), 5.0))
    assert empty.is_empty and "reserve" in empty.note
    assert TopUp().check_params({"amount": 1}) is not None
    assert TopUp().check_params({"max_amount": -1}) is not None


def test_plan_ids_of_plans_without_transfers_are_unchanged() -> None:
    plan = Plan("a", "act", "repay_debt", 1, 1.0, 1.2, repays=(Repay("USDT", 5.0),))
    # The id every earlier version computed: a plan in flight across an upgrade keeps its id.
    assert plan.plan_id == hashlib.sha256(b"a|act|repay_debt|1|;repay:USDT:5").hexdigest()[:24]
    assert Plan("a", "act", "top_up", 1, 1.0, 1.2, transfers=(Transfer("USDT", 5.0),)).plan_id != \
        Plan("a", "act", "top_up", 1, 1.0, 1.2, transfers=(Transfer("USDT", 6.0),)).plan_id


# -- the daemon's core on paper ----------------------------------------------------------------

LEVEL = {"name": "act", "ltv": 0.6, "action": "rebalance", "strategy": "top_up", "target_ltv": 0.5, "cooldown_s": 0}


def loan_settings(**account) -> object:
    acc = {"name": "loan", "model": "ltv", "liquidation_ltv": 0.8, "holdings": {"BTC": 1.0},
           "borrowed": {"USDT": 30000}, "reserve": {"USDT": 20000}, "levels": [LEVEL], **account}
    return parse_settings({"assets": ASSETS, "accounts": [acc]})


def test_a_breach_tops_up_on_paper_and_the_reserve_shrinks() -> None:
    m = Monitor(loan_settings(), default_registry())
    out = m.on_tick(PriceTick("BTC/USDT", 50000, 0))  # LTV 30000 / 45000 = 0.667 > 0.6
    plan = next(o for o in out if isinstance(o, Plan))
    (t,) = plan.transfers
    done = PaperExecutor({"BTC": (50000.0, 50000.0), "USDT": (1.0, 1.0)}.get, 0.001, 0.0005, lambda: 0).execute_now(plan)
    assert done.transfers == plan.transfers and not done.fills
    settled = m.settle(plan, done)
    assert settled.event is None
    assert math.isclose(settled.health_after, 0.8 / 0.5, rel_tol=1e-4)  # LTV 50%
    b = m.engine.books[0]
    assert math.isclose(b.reserve["USDT"], 20000 - t.amount)
    # The reserve left is what a restart starts from.
    snap = snapshot_of(m, 0, 1)
    fresh = Monitor(loan_settings(), default_registry())
    assert restore(fresh, {"loan": snap}) == 1
    assert fresh.engine.books[0].reserve == b.reserve


def test_top_up_needs_a_reserve_where_it_runs() -> None:
    m = Monitor(loan_settings(reserve={}), default_registry())
    with pytest.raises(ConfigError, match="no reserve to top up from"):
        check_strategies(m)


@pytest.mark.parametrize("account, message", [
    ({"source": "bybit", "reserve": {"USDT": 5}}, "name its wallet with reserve_wallet"),
    ({"reserve_wallet": "funding"}, "need source = an exchange id"),
    ({"source": "binance", "model": "margin_level", "liquidation_level": 1.1, "reserve_wallet": "spot"},
     "supported on bybit only"),
    ({"reserve": {"USDT": -1}}, "reserve amounts are >= 0"),
    ({"reserve": {"DOGE": 1}}, "unknown asset 'DOGE'"),
])
def test_bad_reserve_settings_are_one_line_errors(account, message) -> None:
    base = {"name": "x", "model": "unified", "levels": []}
    if account.get("source"):
        base.update(api_key_env="K", api_secret_env="S")
    else:
        base["holdings"] = {"BTC": 1.0}
    with pytest.raises(Exception, match=message):
        parse_settings({"assets": ASSETS, "accounts": [{**base, **account}]})


def test_a_venue_account_needs_a_reserve_wallet_for_top_ups() -> None:
    acc = {"name": "b", "model": "unified", "source": "bybit", "api_key_env": "K", "api_secret_env": "S",
           "levels": [{"name": "act", "mm_rate": 0.6, "action": "rebalance", "strategy": "top_up", "target": 2.5}]}
    with pytest.raises(ConfigError, match="set reserve_wallet"):
        check_strategies(Monitor(parse_settings({"assets": ASSETS, "accounts": [acc]}), default_registry()))
    acc["reserve_wallet"] = "funding"
    check_strategies(Monitor(parse_settings({"assets": ASSETS, "accounts": [acc]}), default_registry()))


def test_a_reload_keeps_the_reserve_left_after_top_ups() -> None:
    from monitor.reload import carried_books
    from monitor.store.sqlite import MemoryStore
    from monitor.wiring import build_daemon
    from tests.test_daemon import ScriptedFeed

    settings = loan_settings()
    d = build_daemon(settings, default_registry(), store=MemoryStore(), feeds=[ScriptedFeed([])])
    engine = d.monitor.engine
    engine.set_book(apply_transfer(engine.books[0], Transfer("USDT", 1500.0)))
    (book,) = carried_books(d, settings)
    assert book.reserve == {"USDT": 18500.0} and book.exposures["USDT"].qty == 1500.0
    edited = loan_settings(reserve={"USDT": 50000})  # an edited reserve: the config's wins
    assert carried_books(d, edited)[0].reserve == {"USDT": 50000.0}
