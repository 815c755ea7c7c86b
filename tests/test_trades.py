"""trades.py (applying orders, repays, perp reductions) and solve.py (closed-form roots, liquidation prices)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.model import Fill, Order, Repay
from monitor.risk.portfolio import IDENTITY, AccountBook, Exposure, evaluate
from monitor.risk.solve import argmax_piecewise, liquidation_price, solve_piecewise_linear
from monitor.risk.trades import apply_fills, apply_order, apply_plan, apply_repay, reduce_perp
from monitor.risk.tiers import Tiers

BTC_SPOT = Order("BTC/USDT", "sell", 0.5, 40000.0, "BTC", "USDT")


def book(model: str = "health_factor", scale: float = 1.0, **exposures: Exposure) -> AccountBook:
    weights = {"BTC": Tiers.flat(0.9), "USDT": Tiers.flat(1.0)}
    return AccountBook("t", model, scale, 1.0, dict(exposures), {a: w for a, w in weights.items() if a in exposures})


# -- apply_order --------------------------------------------------------------------------


def test_sell_moves_base_to_quote_minus_fee() -> None:
    b = book(BTC=Exposure(qty=1.0), USDT=Exposure(debt=10000.0))
    after = apply_order(b, BTC_SPOT, 39990.0, 20.0)
    assert after.exposures["BTC"].qty == 0.5
    # 0.5 * 39990 - 20 = 19975 lands as qty; the debt stays until a Repay.
    assert after.exposures["USDT"] == Exposure(qty=19975.0, debt=10000.0)
    assert b.exposures["BTC"].qty == 1.0  # the input book is untouched


def test_a_unified_account_nets_each_coin_as_the_venue_does() -> None:
    """Bybit's unified account: proceeds in a coin it owes pay that liability off at once."""
    b = book("unified", BTC=Exposure(qty=1.0), USDT=Exposure(debt=10000.0))
    after = apply_order(b, BTC_SPOT, 39990.0, 20.0)
    assert after.exposures["USDT"] == Exposure(qty=19975.0 - 10000.0, debt=0.0)
    small = apply_order(b, Order("BTC/USDT", "sell", 0.1, 40000.0, "BTC", "USDT"), 40000.0, 0.0)
    assert small.exposures["USDT"] == Exposure(qty=0.0, debt=6000.0)
    buy_back = Order("BTC/USDT", "buy", 0.1, 40000.0, "BTC", "USDT")
    owes_btc = book("unified", BTC=Exposure(debt=0.25), USDT=Exposure(qty=10000.0))
    assert apply_order(owes_btc, buy_back, 40000.0, 0.0).exposures["BTC"] == Exposure(qty=0.0, debt=0.15)


def test_sell_more_than_held_raises() -> None:
    b = book(BTC=Exposure(qty=0.4))
    with pytest.raises(ValueError, match="holds"):
        apply_order(b, BTC_SPOT, 40000.0, 0.0)
    with pytest.raises(ValueError):
        apply_order(book(USDT=Exposure(qty=5.0)), BTC_SPOT, 40000.0, 0.0)


def test_buy_shortfall_becomes_quote_debt_and_base_debt_is_not_netted() -> None:
    b = book(BTC=Exposure(debt=0.2), USDT=Exposure(qty=1000.0))
    buy = Order("BTC/USDT", "buy", 0.1, 40000.0, "BTC", "USDT")
    after = apply_order(b, buy, 40000.0, 4.0)
    # costs 4000 + 4: 1000 from the balance, 3004 borrowed.
    assert after.exposures["USDT"] == Exposure(qty=0.0, debt=3004.0)
    assert after.exposures["BTC"] == Exposure(qty=0.1, debt=0.2)


def test_new_asset_gets_identity_or_the_given_schedule() -> None:
    b = book(BTC=Exposure(qty=1.0))
    sell_usdc = Order("BTC/USDC", "sell", 1.0, 40000.0, "BTC", "USDC")
    plain = apply_order(b, sell_usdc, 40000.0, 0.0)
    assert plain.exposures["USDC"].qty == 40000.0
    assert plain.schedule("USDC") == IDENTITY
    tiered = Tiers((0.0, 10000.0), (1.0, 0.5))
    given_ = apply_order(b, sell_usdc, 40000.0, 0.0, schedules={"USDC": tiered})
    assert given_.schedule("USDC") == tiered
    # W = 10000 + 0.5 * 30000 = 25000
    assert evaluate(given_, {"BTC": 40000.0, "USDC": 1.0}).num == pytest.approx(25000.0)


def test_apply_repay_moves_min_of_amount_qty_debt() -> None:
    b = book(USDT=Exposure(qty=300.0, debt=500.0))
    assert apply_repay(b, Repay("USDT", 1000.0)).exposures["USDT"] == Exposure(qty=0.0, debt=200.0)
    assert apply_repay(b, Repay("USDT", 100.0)).exposures["USDT"] == Exposure(qty=200.0, debt=400.0)
    assert apply_repay(b, Repay("ETH", 1.0)) is b


def test_apply_fills_uses_the_filled_amount() -> None:
    b = book(BTC=Exposure(qty=1.0))
    after = apply_fills(b, [Fill(BTC_SPOT, 0.2, 40100.0, 8.02, 0)])
    assert after.exposures["BTC"].qty == pytest.approx(0.8)
    assert after.exposures["USDT"].qty == pytest.approx(0.2 * 40100.0 - 8.02)


# -- perpetuals ---------------------------------------------------------------------------


def unified_long() -> AccountBook:
    # Long 2 BTC from 40000 (cost 80000), mmr 5% -> perp_mm = 0.1; 10000 USDT.
    return AccountBook("u", "unified", 1.0, 1.0,
                       {"BTC": Exposure(perp_size=2.0, perp_cost=80000.0, perp_mm=0.1), "USDT": Exposure(qty=10000.0)},
                       {"BTC": Tiers.flat(0.9), "USDT": Tiers.flat(1.0)})


def test_reduce_long_realizes_pnl_and_shrinks_proportionally() -> None:
    after = reduce_perp(unified_long(), "BTC", -0.5, 38000.0, 19.0, "USDT")
    # closes a quarter: pnl = 0.5 * (38000 - 40000) = -1000, minus the fee 19.
    assert after.exposures["BTC"] == Exposure(perp_size=1.5, perp_cost=60000.0, perp_mm=pytest.approx(0.075))
    assert after.exposures["USDT"].qty == pytest.approx(10000.0 - 1019.0)


def test_reduce_short_and_loss_beyond_balance_becomes_debt() -> None:
    b = AccountBook("u", "unified", 1.0, 1.0,
                    {"ETH": Exposure(perp_size=-10.0, perp_cost=-20000.0, perp_mm=0.5), "USDT": Exposure(qty=1000.0)})
    # short 10 from 2000; buy back 10 at 2300: pnl = -(+10) * (2300 - 2000) = -3000, fee 23.
    after = reduce_perp(b, "ETH", 10.0, 2300.0, 23.0, "USDT")
    assert after.exposures["ETH"].is_empty
    assert after.exposures["USDT"] == Exposure(qty=0.0, debt=2023.0)


def test_perp_order_through_apply_order_and_no_increase() -> None:
    cut = Order("BTC/USDT:USDT", "sell", 2.0, 41000.0, "BTC", "USDT")
    after = apply_order(unified_long(), cut, 41000.0, 0.0)
    assert after.exposures["BTC"].perp_size == 0 and after.exposures["USDT"].qty == pytest.approx(12000.0)
    with pytest.raises(ValueError, match="does not reduce"):
        apply_order(unified_long(), Order("BTC/USDT:USDT", "buy", 1.0, 41000.0, "BTC", "USDT"), 41000.0, 0.0)
    with pytest.raises(ValueError, match="does not reduce"):
        reduce_perp(unified_long(), "BTC", -2.5, 41000.0, 0.0, "USDT")


@settings(max_examples=200, deadline=None)
@given(size=st.floats(-50, 50).filter(lambda s: abs(s) > 1e-3), entry=st.floats(10, 1e5),
       price=st.floats(10, 1e5), frac=st.floats(0.0, 1.0), fee=st.floats(0, 100), usdt=st.floats(0, 1e5),
       mmr=st.floats(0, 0.2))
def test_reduce_perp_conserves_equity_except_the_fee(size, entry, price, frac, fee, usdt, mmr) -> None:
    b = AccountBook("u", "unified", 1.0, 1.0, {
        "BTC": Exposure(perp_size=size, perp_cost=size * entry, perp_mm=abs(size) * mmr),
        "USDT": Exposure(qty=usdt)})
    prices = {"BTC": price, "USDT": 1.0}
    after = reduce_perp(b, "BTC", -size * frac, price, fee, "USDT")
    before_eq, after_eq = evaluate(b, prices).equity, evaluate(after, prices).equity
    assert after_eq == pytest.approx(before_eq - fee, rel=1e-9, abs=1e-6 * (abs(size) * (price + entry) + usdt + 1))
    assert after.exposures["BTC"].perp_mm == pytest.approx(abs(size) * mmr * (1 - frac), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(qty=st.floats(0.01, 10), amount_frac=st.floats(0, 1), price=st.floats(100, 1e5),
       fee_rate=st.floats(0, 0.01), side=st.sampled_from(["buy", "sell"]), usdt=st.floats(0, 1e5))
def test_spot_trades_move_equity_by_fee_and_price_gap_only(qty, amount_frac, price, fee_rate, side, usdt) -> None:
    b = book(BTC=Exposure(qty=qty), USDT=Exposure(qty=usdt, debt=usdt / 2))
    amount = qty * amount_frac
    fill = price * (0.999 if side == "sell" else 1.001)
    order = Order("BTC/USDT", side, amount, fill, "BTC", "USDT")
    after = apply_order(b, order, fill, fee_rate * amount * fill)
    prices = {"BTC": price, "USDT": 1.0}
    expected = evaluate(b, prices).equity - fee_rate * amount * fill - amount * abs(fill - price)
    assert evaluate(after, prices).equity == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert all(e.qty >= 0 and e.debt >= 0 for e in after.exposures.values())


def test_apply_plan_orders_then_repays() -> None:
    b = book(BTC=Exposure(qty=1.0), USDT=Exposure(debt=30000.0))
    after = apply_plan(b, [BTC_SPOT], [Repay("USDT", 30000.0)], 0.001)
    # 0.5 * 40000 * 0.999 = 19980 received and repaid in full.
    assert after.exposures["USDT"] == Exposure(qty=0.0, debt=pytest.approx(10020.0))


# -- solve ------------------------------------------------------------------------------


def test_solve_piecewise_linear_exact_root_in_the_sign_change_segment() -> None:
    # g: slope 1 up to 2, slope 3 after: g(x) = x - 5 on [0,2]; g(x) = -3 + 3(x-2) after. Root: x = 3.
    g = lambda x: x - 5 if x <= 2 else -3 + 3 * (x - 2)  # noqa: E731
    assert solve_piecewise_linear(g, [2.0], 0.0, 10.0) == pytest.approx(3.0, rel=1e-15)
    assert solve_piecewise_linear(g, [2.0], 0.0, 2.5) is None
    assert solve_piecewise_linear(lambda x: 1.0, [], 0.0, 1.0) == 0.0
    assert argmax_piecewise(lambda x: -abs(x - 2), [2.0, 7.0], 0.0, 10.0) == 2.0


def tiered_btc(debt: float) -> AccountBook:
    # BTC 2 with the first 50000 of value at 0.9, the rest at 0.5; USDT debt.
    tiers = Tiers((0.0, 50000.0), (0.9, 0.5))
    return AccountBook("l", "health_factor", 1.0, 1.0, {"BTC": Exposure(qty=2.0), "USDT": Exposure(debt=debt)},
                       {"BTC": tiers, "USDT": Tiers.flat(1.0)})


def test_liquidation_price_crossing_a_tier() -> None:
    prices = {"BTC": 40000.0, "USDT": 1.0}
    # value 80000: W = 45000 + 0.5 * 30000 = 60000 vs debt 44000 (h = 1.36). The upper band
    # bottoms out at W = 45000 > 44000, so h = 1 is in the lower band: 0.9 * 2p = 44000.
    assert liquidation_price(tiered_btc(44000.0), prices, "BTC") == pytest.approx(44000.0 / 1.8, rel=1e-12)
    # debt 50000: in the upper band: 45000 + 0.5 * (2p - 50000) = 50000 -> p = 30000.
    assert liquidation_price(tiered_btc(50000.0), prices, "BTC") == pytest.approx(30000.0, rel=1e-12)
    # the debt asset: 60000 = debt * p -> p = 1.2 (above: a rising debt price liquidates).
    assert liquidation_price(tiered_btc(50000.0), prices, "USDT") == pytest.approx(1.2, rel=1e-12)


def test_liquidation_price_of_a_borrowed_asset_is_above() -> None:
    b = AccountBook("d", "ltv", 0.8, 0.8, {"ETH": Exposure(debt=2.0), "USDT": Exposure(qty=10000.0)})
    # ltv, liquidation_ltv 0.8: h = 0.8 * 10000 / (2p) = 1 at p = 4000.
    assert liquidation_price(b, {"ETH": 2500.0, "USDT": 1.0}, "ETH") == pytest.approx(4000.0)
    assert liquidation_price(b, {"ETH": 2500.0, "USDT": 1.0}, "USDT") == pytest.approx(2500.0 * 2 / 0.8 / 10000)


def test_liquidation_price_none_when_the_asset_cannot_liquidate() -> None:
    no_debt = AccountBook("n", "health_factor", 1.0, 1.0, {"BTC": Exposure(qty=1.0)})
    assert liquidation_price(no_debt, {"BTC": 40000.0}, "BTC") is None
    # debt fully covered by stables at weight 1: BTC going to zero cannot liquidate.
    covered = AccountBook("c", "health_factor", 1.0, 1.0,
                          {"BTC": Exposure(qty=1.0), "USDT": Exposure(qty=20000.0, debt=10000.0)})
    assert liquidation_price(covered, {"BTC": 40000.0, "USDT": 1.0}, "BTC") is None


def test_liquidation_price_unified_perp_and_already_liquidated() -> None:
    prices = {"BTC": 38000.0, "USDT": 1.0}
    # N = 10000 + 2p - 80000, D = 0.1p: N = D at 1.9p = 70000 -> p = 36842.1
    assert liquidation_price(unified_long(), prices, "BTC") == pytest.approx(70000.0 / 1.9)
    # below h = 1 already (p = 36000): the price that would restore h = 1 is above.
    assert liquidation_price(unified_long(), {"BTC": 36000.0, "USDT": 1.0}, "BTC") == pytest.approx(70000.0 / 1.9)


def test_liquidation_price_nearest_root_when_long_and_short_the_same_asset() -> None:
    # Hold 10 ETH (first 10000 at 1.0, then 0.2) and owe 3 ETH, plus 1000 USDT of debt.
    tiers = Tiers((0.0, 10000.0), (1.0, 0.2))
    b = AccountBook("m", "health_factor", 1.0, 1.0, {"ETH": Exposure(qty=10.0, debt=3.0), "USDT": Exposure(debt=1000.0)},
                    {"ETH": tiers})
    # g(p) = W(10p) - 3p - 1000. Below p = 1000: 10p - 3p - 1000 -> root 1000/7 = 142.86.
    # Above: 10000 + 0.2 * (10p - 10000) - 3p - 1000 = 7000 - p -> root 7000.
    prices = {"ETH": 2000.0, "USDT": 1.0}
    assert liquidation_price(b, prices, "ETH") == pytest.approx(1000.0 / 7)  # |2000-142.9| < |7000-2000|
    assert liquidation_price(b, {"ETH": 5000.0, "USDT": 1.0}, "ETH") == pytest.approx(7000.0)


@settings(max_examples=200, deadline=None)
@given(qty=st.floats(0.1, 10), debt=st.floats(1000, 5e5), price=st.floats(100, 1e5),
       w=st.lists(st.floats(0.1, 1.0), min_size=1, max_size=3), bound=st.floats(1000, 2e5), usdt=st.floats(0, 1e5))
def test_liquidation_price_is_where_health_is_one(qty, debt, price, w, bound, usdt) -> None:
    w = sorted(w, reverse=True)
    lows = tuple([0.0] + [bound * (i + 1) for i in range(len(w) - 1)])
    b = AccountBook("p", "health_factor", 1.0, 1.0, {"BTC": Exposure(qty=qty), "USDT": Exposure(qty=usdt, debt=debt)},
                    {"BTC": Tiers(lows, tuple(w))})
    prices = {"BTC": price, "USDT": 1.0}
    liq = liquidation_price(b, prices, "BTC")
    if liq is None:
        # no liquidation: even at a zero price the stables cover the debt, or no price rescues it.
        h0 = evaluate(b, {"BTC": 1e-9, "USDT": 1.0}).health
        assert h0 >= 1 or evaluate(b, prices).health < 1
        return
    assert evaluate(b, {"BTC": liq, "USDT": 1.0}).health == pytest.approx(1.0, rel=1e-9)
    healthy = evaluate(b, prices).health >= 1
    mid = (liq + price) / 2  # between now and the liquidation price, the side does not change
    assert (evaluate(b, {"BTC": mid, "USDT": 1.0}).health >= 1) == healthy or math.isclose(mid, liq)
