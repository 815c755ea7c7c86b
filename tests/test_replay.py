"""Replay over real crash data: the same engine, rules, strategies and paper executor."""

from __future__ import annotations

import gzip
from pathlib import Path

from monitor.config import load_settings, parse_settings
from monitor.feeds.price_file import load_price_file
from monitor.inputs import load_series, parse_time
from monitor.replay import run_replay
from strategies import default_registry

WINDOW = ("2021-04-17T12:00:00Z", "2021-04-19T00:00:00Z")


def replay(settings, prices: list[str], window=WINDOW) -> dict:
    series = load_series(settings, prices, parse_time(window[0], "s"), parse_time(window[1], "e"))
    return run_replay(settings, series, default_registry())


def without_wall(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "wall_seconds"}


def test_replay_is_deterministic(contract_config: Path, crash_prices: list[str]) -> None:
    settings = load_settings(contract_config)
    assert without_wall(replay(settings, crash_prices)) == without_wall(replay(settings, crash_prices))


def test_protection_beats_baseline_on_the_2021_dump(contract_config: Path, crash_prices: list[str]) -> None:
    raw = load_settings(contract_config).model_dump(exclude_none=True)
    # Lever the contract account up so the dump would liquidate it without help.
    raw["accounts"][0]["holdings"] = {"BTC": 1.0, "ETH": 10.0, "USDT": -72000}
    report = replay(parse_settings(raw), crash_prices)
    main = report["accounts"]["main"]
    assert main["baseline"]["liquidated"], main["baseline"]
    assert not main["liquidated"]
    assert main["actions"], "the act level must have rebalanced"
    assert main["traded_notional"] > 0 and main["fees"] > 0
    assert abs(main["fees"] - sum(o["fee"] for a in main["actions"] for o in a["orders"])) < 1e-6
    levels = [a["level"] for a in main["alerts"] if a["state"] == "firing"]
    assert "warn" in levels and "act" in levels


def test_confirmation_filters_a_wick(tmp_path: Path) -> None:
    """A one-bar wick below the act level does not act when confirm_s spans more than the wick."""
    prices = tmp_path / "btc.csv"
    rows = ["timestamp,open,high,low,close"]
    for n in range(60):
        low = 42000 if n == 30 else 59900  # one 1-minute candle wicks to 42k and closes back
        rows.append(f"{1_600_000_000 + n * 60},60000,60100,{low},60000")
    prices.write_text("\n".join(rows) + "\n")
    base = {
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.9}, "USDT": {"price": 1.0}},
        "accounts": [{"name": "a", "holdings": {"BTC": 1.0, "USDT": -40000},
                      "levels": [{"name": "act", "health": 1.1, "action": "rebalance", "strategy": "repay_debt",
                                  "target": 1.5, "confirm_s": 0}]}],
    }
    acted = run_replay(parse_settings(base), [load_price_file(prices, "BTC/USDT")], default_registry())
    base["accounts"][0]["levels"][0]["confirm_s"] = 120
    waited = run_replay(parse_settings(base), [load_price_file(prices, "BTC/USDT")], default_registry())
    assert acted["accounts"]["a"]["actions"]
    assert not waited["accounts"]["a"]["actions"]
    # the wick was still seen (candles expand to their extremes): health dipped in both runs
    assert waited["accounts"]["a"]["min_health"] < 1.1


def test_bad_rows_are_counted_in_the_report(tmp_path: Path, shared_data: Path, contract_config: Path) -> None:
    src = shared_data / "binance_1m_2021-04" / "binance_ETHUSDT_1m_2021-04-16_2021-04-19.csv.gz"
    lines = gzip.decompress(src.read_bytes()).decode().splitlines()
    lines[10] = "garbage,row"
    lines[20] = lines[20].replace(",", ",-", 1)
    eth = tmp_path / "eth.csv"
    eth.write_text("\n".join(lines) + "\n")
    btc = shared_data / "binance_1m_2021-04" / "binance_BTCUSDT_1m_2021-04-16_2021-04-19.csv.gz"
    report = replay(load_settings(contract_config), [f"BTC/USDT={btc}", f"ETH/USDT={eth}"],
                    ("2021-04-16T00:00:00Z", "2021-04-16T06:00:00Z"))
    assert report["bad_rows"] == 2


def wick_config(confirm_s: float = 0) -> dict:
    return {
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.9}, "USDT": {"price": 1.0}},
        "accounts": [{"name": "a", "holdings": {"BTC": 2.0, "USDT": -80000},
                      "levels": [{"name": "act", "health": 1.1, "action": "rebalance", "strategy": "repay_debt",
                                  "target": 1.5, "confirm_s": confirm_s}]}],
    }


def test_a_tick_below_one_is_a_liquidation_even_if_the_rescue_follows(tmp_path: Path) -> None:
    prices = tmp_path / "btc.csv"
    prices.write_text("timestamp,price\n0,60000\n60,43000\n120,60000\n")  # 2*43000*0.9/80000 = 0.9675
    report = run_replay(parse_settings(wick_config()), [load_price_file(prices, "BTC/USDT")], default_registry())
    a = report["accounts"]["a"]
    assert a["actions"] and a["actions"][0]["health_before"] < 1
    assert a["liquidated"] and abs(a["min_health"] - 0.9675) < 1e-12


def test_a_failing_user_strategy_costs_no_alert(tmp_path: Path) -> None:
    prices = tmp_path / "btc.csv"
    prices.write_text("timestamp,price\n0,60000\n60,48000\n120,47000\n180,60000\n")
    cfg = wick_config()
    cfg["accounts"][0]["levels"][0]["strategy"] = "tests.test_replay:BrokenStrategy"
    report = run_replay(parse_settings(cfg), [load_price_file(prices, "BTC/USDT")], default_registry())
    a = report["accounts"]["a"]
    assert [x["state"] for x in a["alerts"]] == ["firing", "resolved"]
    failed = [n for n in a["notices"] if n["kind"] == "ineffective"]
    assert len(failed) == 1 and "RuntimeError: boom" in failed[0]["detail"]  # once, not every tick


class BrokenStrategy:
    name = "broken"

    def check(self, book, stables, markets):
        return None

    def plan(self, request):
        raise RuntimeError("boom")
