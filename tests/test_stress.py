"""Stress tests: hand-computed shocks, the uniform fall to liquidation across weight tiers,
the plan the daemon would execute, starting prices, named scenarios and bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from monitor.accounts.static import build_books
from monitor.analysis.scenarios import (
    SCENARIOS,
    find_scenario,
    scenario_shocks,
    worst_drawdown,
)
from monitor.analysis.shocks import parse_shock, prices_from_feeds, prices_from_files
from monitor.analysis.stress import run_stress
from monitor.config import parse_settings
from monitor.errors import UserError
from monitor.feeds.price_file import load_price_file
from monitor.inputs import load_series, parse_time
from monitor.risk.solve import uniform_liquidation_shock
from strategies import default_registry
from tests.test_cli import assert_user_error, cli

ETH_TIERS = [{"up_to": 1_000_000, "weight": 0.95}, {"up_to": 5_000_000, "weight": 0.90}, {"weight": 0.80}]


def settings_for(holdings: dict, levels: list | None = None, **account) -> object:
    return parse_settings({
        "execution": {"fee_rate": 0.001, "slippage": 0.0005},
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.9}, "ETH": {"price": "ETH/USDT", "weight": ETH_TIERS},
                   "USDT": {"price": 1.0}, "USDC": {"price": 1.0}},
        "accounts": [{"name": "a", "holdings": holdings, "levels": levels or [], **account}],
    })


def book_of(settings):
    return build_books(settings)[0]


def test_uniform_shock_crosses_a_weight_tier_exactly() -> None:
    # 1000 ETH at 3000 is worth 3M: its first 1M counts at 95%, the next 2M at 90%. The debt
    # 760,000 equals 95% of 800k, so health reaches 1 only once ETH is worth 800k, inside the
    # first tier: a fall to 800/3000 of the price. A linear guess at today's 90% would say
    # 1 - 760000 / (0.9 * 3M) = -71.85%, and the tier-averaged 2.75M/3M weight -72.36%.
    book = book_of(settings_for({"ETH": 1000, "USDT": -760_000}))
    shock = uniform_liquidation_shock(book, {"ETH": 3000.0, "USDT": 1.0}, ["ETH"])
    assert shock == pytest.approx(800 / 3000 - 1, rel=1e-12)


def test_uniform_shock_over_two_assets_and_the_edges() -> None:
    prices = {"BTC": 60000.0, "ETH": 3000.0, "USDT": 1.0}
    book = book_of(settings_for({"BTC": 1.0, "ETH": 10.0, "USDT": -50_000}))
    # both fall together: (0.9*60000 + 0.95*30000) * m = 50000 -> m = 50000 / 82500
    assert uniform_liquidation_shock(book, prices, ["BTC", "ETH"]) == pytest.approx(50000 / 82500 - 1, rel=1e-12)
    # only BTC falls: 0.9*60000*m + 28500 = 50000
    assert uniform_liquidation_shock(book, prices, ["BTC"]) == pytest.approx(21500 / 54000 - 1, rel=1e-12)
    # already below 1, and a debt the stable alone covers
    assert uniform_liquidation_shock(book_of(settings_for({"BTC": 1.0, "USDT": -60_000})), prices, ["BTC"]) == 0.0
    covered = book_of(settings_for({"BTC": 1.0, "USDC": 20_000, "USDT": -10_000}))
    assert uniform_liquidation_shock(covered, {**prices, "USDC": 1.0}, ["BTC"]) is None
    no_debt = book_of(settings_for({"BTC": 1.0}))
    assert uniform_liquidation_shock(no_debt, prices, ["BTC"]) is None  # even at zero, nothing is owed


def test_uniform_shock_of_a_unified_account_with_a_perpetual() -> None:
    # 10,000 USDT and a long 1 BTC perp entered at 60,000 (mm 5%): margin balance 10000 + (p - 60000),
    # maintenance 0.05 p. Health 1 where 10000 + p - 60000 = 0.05 p: p = 50000 / 0.95.
    settings = parse_settings({
        "assets": {"BTC": {"price": "BTC/USDT"}, "USDT": {"price": 1.0}},
        "accounts": [{"name": "u", "model": "unified", "holdings": {"USDT": 10_000},
                      "positions": [{"symbol": "BTC/USDT", "size": 1.0, "entry": 60_000, "mmr": 0.05}]}],
    })
    shock = uniform_liquidation_shock(book_of(settings), {"BTC": 60_000.0, "USDT": 1.0}, ["BTC"])
    assert shock == pytest.approx(50_000 / 0.95 / 60_000 - 1, rel=1e-12)


def test_shocked_health_and_level_across_a_tier() -> None:
    levels = [{"name": "warn", "health": 2.5}, {"name": "low", "health": 2.0}]
    settings = settings_for({"ETH": 1000, "USDT": -760_000}, levels)
    [r] = run_stress(settings, default_registry(), {"ETH": 3000.0, "USDT": 1.0, "BTC": 60000.0, "USDC": 1.0},
                     {"ETH": -0.5})
    # 3M -> 1.5M: 0.95 * 1M + 0.90 * 0.5M = 1.4M
    assert r.health_before == pytest.approx((950_000 + 0.9 * 2_000_000) / 760_000, rel=1e-12)
    assert r.health_after == pytest.approx(1_400_000 / 760_000, rel=1e-12)
    assert r.level == "low" and not r.liquidated and r.plan is None  # alerts only: nothing to execute
    assert r.uniform_shock == pytest.approx(800 / 3000 - 1, rel=1e-12)
    assert r.collateral == ("ETH",)


def test_the_plan_is_the_hand_solved_repay() -> None:
    levels = [{"name": "act", "health": 1.2, "action": "rebalance", "strategy": "repay_debt", "target": 1.5}]
    settings = settings_for({"BTC": 2.0, "USDT": -80_000}, levels)
    prices = {"BTC": 60000.0, "ETH": 3000.0, "USDT": 1.0, "USDC": 1.0}
    [r] = run_stress(settings, default_registry(), prices, {"BTC": -0.3})
    p, w, q, debt, target, fee, slip = 42000.0, 0.9, 2.0, 80_000.0, 1.5, 0.001, 0.0005
    assert r.health_after == pytest.approx(w * q * p / debt, rel=1e-12)
    assert r.level == "act" and r.liquidated  # 0.945
    # sell x at p(1 - slip), repay the proceeds after the fee: w(q - x)p = H(debt - x p (1-slip)(1-fee))
    rate = p * (1 - slip) * (1 - fee)
    x = (w * q * p - target * debt) / (w * p - target * rate)
    [order] = r.plan.orders
    assert order["side"] == "sell" and order["amount"] == pytest.approx(x, rel=1e-9)
    assert order["price"] == pytest.approx(p * (1 - slip), rel=1e-12)
    assert r.plan.repays[0]["amount"] == pytest.approx(x * rate, rel=1e-9)
    assert r.plan.health_after == pytest.approx(target, rel=1e-9)
    assert r.plan.cost == pytest.approx(x * p * (1 - slip) * fee + x * p * slip, rel=1e-9)


def test_a_fixed_price_stable_can_be_shocked() -> None:
    settings = settings_for({"USDC": 100_000, "USDT": -80_000}, [{"name": "warn", "health": 1.2}])
    [r] = run_stress(settings, default_registry(), {"BTC": 1.0, "ETH": 1.0, "USDT": 1.0, "USDC": 1.0}, {"USDC": -0.1})
    assert r.health_before == pytest.approx(1.25) and r.health_after == pytest.approx(1.125)
    assert r.level == "warn" and r.collateral == ()  # a stable is no volatile collateral


def test_parse_shock() -> None:
    settings = settings_for({"BTC": 1.0, "USDT": -1000})
    assert parse_shock("BTC=-30%", settings) == ("BTC", pytest.approx(-0.3))
    assert parse_shock(" ETH = +12.5% ", settings) == ("ETH", pytest.approx(0.125))
    for bad in ("BTC=-30", "BTC-30%", "DOGE=-30%", "BTC=abc%", "BTC=-100%", "=5%"):
        with pytest.raises(UserError):
            parse_shock(bad, settings)


def test_scenarios_are_the_worst_drawdowns_of_the_data(shared_data: Path) -> None:
    """Every figure shipped in SCENARIOS, re-derived from the crash data it was measured on."""
    b21 = "binance_1m_2021-04/binance_{}USDT_1m_2021-04-16_2021-04-19.csv.gz"
    files = {
        "2020-03-12": {"ETH": "eth_10m/ETHUSD_10m_2020-03-12.csv.gz"},
        "2021-04-18": {a: b21.format(a) for a in ("BTC", "ETH", "BNB", "SOL", "XRP", "DOGE", "ADA", "LUNA")},
        "2021-05-19": {"ETH": "eth_10m/ETHUSD_10m_2021-05-19.csv.gz"},
        "2023-03-11 USDC": {"BTC": "usdc_depeg_2023-03/binanceus_BTCUSDT_1m_2023-03-01_2023-03-21.csv.gz"},
        "2025-10-10 USDe": {"USDE": "usde_depeg_2025-10/binance_USDEUSDT_1m_2025-10-08_2025-10-14.csv.gz"},
    }
    for s in SCENARIOS:
        window = parse_time(s.start, "start"), parse_time(s.end, "end")
        measured = {a: worst_drawdown(load_price_file(shared_data / f, a, *window).price)
                    for a, f in files[s.name].items()}
        if s.name == "2023-03-11 USDC":
            measured["USDC"] = worst_drawdown(implied_usdc(shared_data, *window))
        assert {a: round(v, 4) for a, v in measured.items()} == s.drawdowns, s.name


def implied_usdc(shared_data: Path, start: int, end: int) -> np.ndarray:
    """USDC/USD = BTCUSD / BTCUSDC on the minutes both pairs traded (Binance.US closes)."""
    def closes(pair: str) -> dict[int, float]:
        path = shared_data / f"usdc_depeg_2023-03/binanceus_{pair}_1m_2023-03-01_2023-03-21.csv.gz"
        rows = [line.split(",") for line in gzip.decompress(path.read_bytes()).decode().splitlines()[1:]]
        return {int(r[0]): float(r[4]) for r in rows if start <= int(r[0]) < end and float(r[5]) > 0}
    usd, usdc = closes("BTCUSD"), closes("BTCUSDC")
    return np.array([usd[t] / usdc[t] for t in sorted(usd.keys() & usdc.keys())])


def test_scenario_matches_assets_by_name_or_symbol_base() -> None:
    settings = parse_settings({
        "assets": {"XBT": {"price": "BTC/USDT"}, "eth": {"price": "ETH/USDT"}, "USDT": {"price": 1.0}},
        "accounts": [{"name": "a", "holdings": {"XBT": 1.0, "eth": 1.0, "USDT": -100}}],
    })
    assert scenario_shocks(find_scenario("2021-04-18"), settings) == {"XBT": -0.1681, "eth": -0.1958}
    assert find_scenario(" 2025-10-10 usde ").name == "2025-10-10 USDe"
    with pytest.raises(UserError, match="known: '2020-03-12'"):
        find_scenario("2022-05-09")


def test_start_prices_from_files_at_a_time(shared_data: Path, crash_prices: list[str]) -> None:
    settings = settings_for({"BTC": 1.0, "ETH": 10.0, "USDT": -50_000})
    series = load_series(settings, crash_prices, None, None)
    at = parse_time("2021-04-18T03:30:00Z", "--at")
    prices, ts = prices_from_files(settings, series, at)
    # the bar opening at 03:30 expands to open, extremes, close: at 03:30:00 exactly it is the open
    rows = gzip.decompress((shared_data / "binance_1m_2021-04/binance_BTCUSDT_1m_2021-04-16_2021-04-19.csv.gz")
                           .read_bytes()).decode().splitlines()
    open_0330 = next(float(r.split(",")[1]) for r in rows if r.startswith(str(at)))
    assert prices["BTC"] == open_0330 and ts == at and prices["USDT"] == 1.0
    last, _ = prices_from_files(settings, series, None)
    assert last["BTC"] == float(rows[-1].split(",")[4])
    with pytest.raises(UserError, match="no price at or before"):
        prices_from_files(settings, series, parse_time("2020-01-01T00:00Z", "--at"))


def test_start_prices_from_a_snapshot_of_the_feeds() -> None:
    settings = parse_settings({
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.9}, "USDT": {"price": 1.0}},
        "accounts": [{"name": "a", "holdings": {"BTC": 1.0, "USDT": -30_000}}],
        "feeds": [{"name": "sim", "symbols": ["BTC/USDT"], "simulated": {"start": {"BTC/USDT": 61_000}}}],
    })
    prices, ts = prices_from_feeds(settings, timeout_s=10)
    assert prices == {"BTC": 61_000.0, "USDT": 1.0} and ts > 0  # the simulated market's first tick


def test_stress_cli_end_to_end(tmp_path: Path, contract_config: Path, crash_prices: list[str]) -> None:
    out_json = tmp_path / "stress.json"
    proc = cli("stress", "--config", str(contract_config), "--prices", crash_prices[0], "--prices", crash_prices[1],
               "--at", "2021-04-17T12:00Z", "--shock", "BTC=-30%", "--scenario", "2021-04-18",
               "--report", str(out_json))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "scenario 2021-04-18: BTC -30.0%, ETH -19.6%" in out  # the explicit shock wins over the scenario's
    assert "across BTC/ETH" in out and "plans the daemon would execute" in out
    report = json.loads(out_json.read_text())
    [run] = report["runs"]
    [main] = run["accounts"]
    assert run["shocks"] == {"BTC": -0.3, "ETH": -0.1958}
    prices = report["start_prices"]
    # the contract account: BTC at 95%, ETH overridden to 82.5%, 50,000 USDT borrowed
    assert main["health_after"] == pytest.approx(
        (0.7 * prices["BTC"] * 0.95 + 10 * prices["ETH"] * (1 - 0.1958) * 0.825) / 50000, rel=1e-12)
    assert f"{main['health_after']:.4f}" in out and main["level"] in out


@pytest.mark.parametrize("args, needle", [
    (["--shock", "BTC=-30"], "expected ASSET=PERCENT"),
    (["--shock", "DOGE=-30%"], "unknown asset 'DOGE'"),
    (["--scenario", "2022-05-09"], "unknown scenario"),
    ([], "give at least one --shock"),
    (["--shock", "BTC=-5%", "--at", "2021-04-18T00:00Z"], "--at: needs --prices"),
])
def test_stress_bad_input_is_one_line(contract_config: Path, args: list[str], needle: str) -> None:
    assert_user_error(cli("stress", "--config", str(contract_config), *args), needle)


def test_stress_without_prices_or_feeds_says_what_to_pass(contract_config: Path) -> None:
    assert_user_error(cli("stress", "--config", str(contract_config), "--shock", "BTC=-5%"),
                      "no price for BTC/USDT", "--prices")
