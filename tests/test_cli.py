"""The command line as a user meets it: real subprocesses, real files."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_commands() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("run", "check-config", "replay"):
        assert command in proc.stdout


def test_check_config_contract(contract_config: Path) -> None:
    proc = cli("check-config", str(contract_config))
    assert proc.returncode == 0, proc.stderr
    assert "main: health_factor" in proc.stdout
    assert "act: below health 1.15" in proc.stdout


def test_check_config_values_accounts_at_the_last_prices(contract_config: Path, crash_prices: list[str]) -> None:
    proc = cli("check-config", str(contract_config), "--prices", crash_prices[0], "--prices", crash_prices[1])
    assert proc.returncode == 0, proc.stderr
    btc, eth = (last_close(p.split("=", 1)[1]) for p in crash_prices)
    expected = (1.0 * btc * 0.95 + 10.0 * eth * 0.825) / 50000  # the contract account, ETH weight overridden
    line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("main:"))
    assert f"health {expected:.4f}" in line


def last_close(path: str) -> float:
    rows = gzip.decompress(Path(path).read_bytes()).decode().strip().splitlines()
    return float(rows[-1].split(",")[4])


SHIPPED = ["config.example.toml", *sorted(f"examples/{p.name}" for p in (REPO / "examples").glob("*.toml"))]


@pytest.mark.parametrize("config", SHIPPED)
def test_shipped_configs_pass(config: str) -> None:
    proc = cli("check-config", config)
    assert proc.returncode == 0, proc.stderr


def test_check_config_typo_is_one_line(tmp_path: Path, contract_config: Path) -> None:
    bad = tmp_path / "typo.toml"
    bad.write_text(contract_config.read_text().replace("confirm_s = 30", "confirm_sec = 30"))
    assert_user_error(cli("check-config", str(bad)), "typo.toml", "accounts.0.levels.1.confirm_sec", "unknown key")


def test_check_config_rejects_strategy_that_cannot_help(tmp_path: Path) -> None:
    cfg = tmp_path / "ml.toml"
    cfg.write_text("""
[assets.BTC]
price = "BTC/USDT"
[assets.USDT]
price = 1.0
[[accounts]]
name = "cross"
model = "margin_level"
liquidation_level = 1.1
holdings = { BTC = 1.0, USDT = -30000 }
  [[accounts.levels]]
  name = "act"
  margin_level = 1.3
  action = "rebalance"
  strategy = "sell_to_stable"
  target_margin_level = 1.6
""")
    assert_user_error(cli("check-config", str(cfg)), "cross", "sell_to_stable")


def test_missing_config_file(tmp_path: Path) -> None:
    assert_user_error(cli("check-config", str(tmp_path / "nope.toml")), "nope.toml")


def test_replay_contract_on_a_real_crash(tmp_path: Path, contract_config: Path, crash_prices: list[str]) -> None:
    out = tmp_path / "report.json"
    args = ["replay", "--config", str(contract_config), "--report", str(out),
            "--start", "2021-04-17T12:00:00Z", "--end", "2021-04-19T00:00:00Z"]
    for p in crash_prices:
        args += ["--prices", p]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report) >= {"accounts", "ticks", "bad_rows", "start", "end", "wall_seconds"}
    assert report["start"].startswith("2021-04-17T12:00")
    main = report["accounts"]["main"]
    assert set(main) >= {"model", "start_health", "end_health", "min_health", "min_health_at", "liquidated",
                         "liquidated_at", "alerts", "actions", "baseline", "traded_notional", "fees"}
    assert main["model"] == "health_factor"
    assert main["min_health"] <= main["start_health"]
    assert main["liquidated"] == (main["min_health"] < 1)
    assert set(main["baseline"]) >= {"min_health", "liquidated", "liquidated_at"}
    assert main["min_health"] >= main["baseline"]["min_health"] - 1e-12  # acting never makes it worse
    for alert in main["alerts"]:
        assert alert["state"] in ("firing", "resolved")
    for action in main["actions"]:
        assert action["health_after"] > action["health_before"]
        for order in action["orders"]:
            assert order["side"] in ("buy", "sell") and order["amount"] > 0 and order["fee"] >= 0
    assert "main (health_factor)" in proc.stdout


def test_replay_bad_price_file_is_one_line(tmp_path: Path, contract_config: Path, crash_prices: list[str]) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_text("hello,world\n1,2\n")
    proc = cli("replay", "--config", str(contract_config), "--prices", crash_prices[0], "--prices", f"ETH/USDT={junk}")
    assert_user_error(proc, "junk.csv")


def test_replay_unknown_symbol_and_missing_prices(contract_config: Path, crash_prices: list[str]) -> None:
    path = crash_prices[0].split("=", 1)[1]
    assert_user_error(cli("replay", "--config", str(contract_config), "--prices", f"DOGE/USDT={path}"), "DOGE/USDT")
    assert_user_error(cli("replay", "--config", str(contract_config), "--prices", crash_prices[0]), "ETH/USDT")


def _read_until(stream, needles: list[str], found: dict[str, threading.Event], sink: list[str]) -> None:
    for line in stream:
        sink.append(line)
        for n in needles:
            if n in line:
                found[n].set()


def test_run_offline_demo_alerts_rebalances_and_stops_on_sigint(tmp_path: Path) -> None:
    """The README's first command on the offline config: alerts fire, a rebalance happens, SIGINT stops it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "--log-format", "json", "run", "--config",
                             str(REPO / "examples" / "offline.toml")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    needles = ["FIRING [dry-run] demo/warn", "rebalance executed"]
    found = {n: threading.Event() for n in needles}
    out: list[str] = []
    err: list[str] = []
    threads = [threading.Thread(target=_read_until, args=(proc.stdout, needles, found, out), daemon=True),
               threading.Thread(target=_read_until, args=(proc.stderr, needles, found, err), daemon=True)]
    for t in threads:
        t.start()
    try:
        for n in needles:
            assert found[n].wait(60), f"never saw {n!r}; stdout={''.join(out)[-2000:]} stderr={''.join(err)[-2000:]}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for t in threads:
        t.join(5)
    assert any('"daemon stopped"' in line for line in err)
    assert (tmp_path / "state" / "state.sqlite").exists()  # the embedded store, in the working directory


def test_strategy_params_typo_is_an_error(tmp_path: Path, contract_config: Path) -> None:
    bad = tmp_path / "params.toml"
    bad.write_text(contract_config.read_text().replace('strategy = "repay_debt"',
                                                       'strategy = "repay_debt"\n  params = { max_slipage = 0.01 }'))
    assert_user_error(cli("check-config", str(bad)), "repay_debt takes no params", "max_slipage")


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every strict parser does."""
    def refuse(constant: str):
        raise AssertionError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in-process (fast); its logging is bound to this test's capture, so it is undone after."""
    import structlog

    from monitor.cli import main
    try:
        code = main(list(args))
    finally:
        structlog.reset_defaults()
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("window, words", [
    (("--start", "2021-04-18T00:00:00Z", "--end", "2021-04-17T00:00:00Z"), "is not before --end"),
    (("--start", "2021-04-18T00:00:00Z", "--end", "2021-04-18T00:00:00Z"), "the window is empty"),
    (("--start", "2030-01-01T00:00:00Z",), "has no tick in the --start/--end window (it covers 2021-04-16"),
    (("--end", "2020-01-01T00:00:00Z",), "has no tick in the --start/--end window"),
])
def test_replay_of_an_empty_window_is_an_error(capsys, contract_config: Path, crash_prices: list[str],
                                               window: tuple[str, ...], words: str) -> None:
    args = ["replay", "--config", str(contract_config), *window]
    for p in crash_prices:
        args += ["--prices", p]
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and words in err, err


def test_replay_names_the_lines_of_bad_rows_and_writes_strict_json(tmp_path: Path, capsys,
                                                                   contract_config: Path) -> None:
    btc, eth, report = tmp_path / "btc.csv", tmp_path / "eth.csv", tmp_path / "r.json"
    # 1e-308 and 1e308 would overflow the engine's ratios: bad rows, never a numpy warning
    btc.write_text("timestamp,price\n1000,60000\n2000,1e-308\n3000,x\n4000,59000\n5000,1e308\n6000,58000\n")
    eth.write_text("timestamp,price\n1000,2000\n")
    code, out, err = run_main(capsys, "replay", "--config", str(contract_config), "--report", str(report),
                              "--prices", f"BTC/USDT={btc}", "--prices", f"ETH/USDT={eth}")
    assert (code, err) == (0, ""), err
    assert f"{btc}: skipped 3 bad rows (lines 3, 4, 6)" in out
    doc = strict_json(report.read_text())
    assert doc["bad_rows_by_file"] == {str(btc): {"rows": 3, "lines": [3, 4, 6]}}


def test_replay_into_a_closed_pipe_ends_quietly(contract_config: Path, crash_prices: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head`) is gone before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "monitor", "replay", "--config", str(contract_config),
                               "--start", "2021-04-18T00:00:00Z", "--end", "2021-04-18T01:00:00Z",
                               "--prices", crash_prices[0], "--prices", crash_prices[1]],
                              cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode in (0, 141) and proc.stderr == "", proc.stderr
