"""Sweeps: the grid syntax, determinism (in one process or many), every cell equal to a
replay run on its own, the ranking, the CSV and the heat map."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from monitor.analysis.sweep import Axis, grid, outcome, parse_vary, ranked, run_sweep
from monitor.analysis.sweep_output import sweep_csv, sweep_text
from monitor.config import load_settings, parse_settings
from monitor.errors import UserError
from monitor.inputs import load_series, parse_time
from monitor.replay import run_replay
from strategies import default_registry
from tests.test_cli import assert_user_error, cli

WINDOW = ("2021-04-18T00:00:00Z", "2021-04-18T06:00:00Z")  # the dump at 03:35, six hours of 1-minute bars


@pytest.fixture(scope="module")
def leveraged(contract_config: Path):
    """The contract config levered so the dump liquidates it without actions."""
    raw = load_settings(contract_config).model_dump(exclude_none=True)
    raw["accounts"][0]["holdings"] = {"BTC": 1.0, "ETH": 10.0, "USDT": -66000}
    second = {**raw["accounts"][0], "name": "safer", "holdings": {"BTC": 1.0, "ETH": 10.0, "USDT": -45000}}
    raw["accounts"].append(second)
    return parse_settings(raw)


@pytest.fixture(scope="module")
def series(leveraged, crash_prices: list[str]):
    return load_series(leveraged, crash_prices, parse_time(WINDOW[0], "s"), parse_time(WINDOW[1], "e"))


def test_vary_syntax(contract_config: Path) -> None:
    s = load_settings(contract_config)
    assert parse_vary("act.health=1.05:1.25:0.05", s).values == (1.05, 1.1, 1.15, 1.2, 1.25)  # STOP included, exact
    assert parse_vary("act.target=1.3,1.5", s) == Axis("act", "target", (1.3, 1.5))
    assert parse_vary("warn.confirm_s=0,30,120", s).values == (0.0, 30.0, 120.0)
    for bad, needle in [("act.health", "expected LEVEL.PARAM"), ("act.colour=1", "unknown level parameter"),
                        ("nope.health=1.1", "no account has a level named 'nope'"),
                        ("act.health=1.2:1.1:0.05", "STOP >= START"), ("act.health=1.1:1.2:0", "STEP > 0"),
                        ("act.health=1.1:x:0.1", "not a number"), ("act.health=1.1,1.1", "distinct"),
                        ("act.health=1:2", "not a number")]:
        with pytest.raises(UserError, match=needle):
            parse_vary(bad, s)


def test_invalid_combinations_are_skipped_with_the_reason(contract_config: Path) -> None:
    s = load_settings(contract_config)
    cells = grid(s, [parse_vary("act.health=1.2,1.45", s)])  # the act target is 1.4
    assert cells[0].settings is not None
    assert cells[1].settings is None and "must be above the level" in cells[1].problem
    with pytest.raises(UserError, match="no cell of the grid is a valid config"):
        grid(s, [parse_vary("act.health=1.45,1.5", s)])


def by_hand(settings, health: float, target: float):
    """The config of one cell, written without the sweep's code."""
    raw = settings.model_dump(exclude_none=True)
    for acc in raw["accounts"]:
        for lv in acc["levels"]:
            if lv["name"] == "act":
                lv["health"], lv["target"] = health, target
    return parse_settings(raw)


def test_grid_cells_equal_individual_replays_and_runs_are_deterministic(leveraged, series) -> None:
    axes = (parse_vary("act.health=1.1,1.2", leveraged), parse_vary("act.target=1.3,1.5", leveraged))
    parallel = run_sweep(leveraged, axes, series, jobs=2)
    serial = run_sweep(leveraged, axes, series, jobs=1)
    assert parallel.outcomes == serial.outcomes
    assert [c.values for c in parallel.cells] == [(1.1, 1.3), (1.1, 1.5), (1.2, 1.3), (1.2, 1.5)]
    for cell in parallel.cells:
        report = run_replay(by_hand(leveraged, *cell.values), series, default_registry())
        assert parallel.outcomes[cell.index] == {n: outcome(a) for n, a in report["accounts"].items()}
    main = [parallel.outcomes[c.index]["main"] for c in parallel.cells]
    assert main[0]["baseline_liquidated"]  # the dump liquidates it without actions ...
    assert any(not o["liquidated"] for o in main)  # ... and some settings save it
    assert len({(o["fees"], o["min_health"]) for o in main}) > 1  # the levels change the outcome


def test_ranking_puts_the_cheapest_survivor_first(leveraged, series) -> None:
    axes = (parse_vary("act.health=1.05,1.15,1.25", leveraged),)
    result = run_sweep(leveraged, axes, series, jobs=1)
    for account in result.accounts:
        rows = [o for _, o in ranked(result, account)]
        survivors = [o for o in rows if not o["liquidated"]]
        assert rows[: len(survivors)] == survivors
        assert [o["fees"] for o in survivors] == sorted(o["fees"] for o in survivors)
        dead = rows[len(survivors):]
        assert [o["min_health"] for o in dead] == sorted((o["min_health"] for o in dead), reverse=True)
    text = sweep_text(result)
    assert text.startswith("swept 3 cell(s) over act.health (3)")
    first_row = text.split("main:")[1].splitlines()[2].split()
    best_cell, best = ranked(result, "main")[0]
    assert float(first_row[0]) == best_cell.values[0] and first_row[2] == f"{best['min_health']:.4f}"


def test_csv_is_the_raw_grid(leveraged, series) -> None:
    axes = (parse_vary("act.health=1.1,1.2", leveraged), parse_vary("act.confirm_s=0,120", leveraged))
    result = run_sweep(leveraged, axes, series, jobs=1)
    rows = list(csv.DictReader(io.StringIO(sweep_csv(result))))
    assert len(rows) == 4 * 2
    for row in rows:
        o = result.outcomes[int(row["cell"])][row["account"]]
        assert float(row["act.health"]) == result.cells[int(row["cell"])].values[0]
        assert float(row["fees"]) == o["fees"] and int(row["actions"]) == o["actions"]
        assert row["liquidated"] == str(o["liquidated"])


def test_sweep_cli_table_csv_and_heat_map(tmp_path: Path, contract_config: Path, crash_prices: list[str]) -> None:
    out_csv, out_png = tmp_path / "grid.csv", tmp_path / "heat.png"
    proc = cli("sweep", "--config", str(contract_config), "--prices", crash_prices[0], "--prices", crash_prices[1],
               "--start", WINDOW[0], "--end", WINDOW[1], "--vary", "act.health=1.05:1.25:0.1",
               "--vary", "act.target=1.3,1.5", "--jobs", "2", "--csv", str(out_csv), "--plot", str(out_png))
    assert proc.returncode == 0, proc.stderr
    assert "swept 6 cell(s) over act.health (3) x act.target (2)" in proc.stdout
    assert proc.stderr == ""  # no progress bar off a terminal
    assert len(out_csv.read_text().splitlines()) == 1 + 6
    from tests.test_charts import assert_readable_png
    assert_readable_png(out_png, min_size=(300, 300))


@pytest.mark.parametrize("vary, needle", [
    ("act.health=1.05:1.25", "not a number range"),
    ("act.speed=1", "unknown level parameter 'speed'"),
    ("panic.health=1.1", "no account has a level named 'panic'"),
])
def test_sweep_bad_vary_is_one_line(contract_config: Path, crash_prices: list[str], vary: str, needle: str) -> None:
    assert_user_error(cli("sweep", "--config", str(contract_config), "--prices", crash_prices[0],
                          "--prices", crash_prices[1], "--vary", vary), needle)
