"""status, journal and kill-switch: the store read and changed from the command line."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from monitor.model import wall_clock_ms
from monitor.store.base import AccountSnapshot, AlertRecord
from monitor.store.sqlite import SqliteStore
from tests.redis_server import free_port
from tests.test_cli import assert_user_error, cli, run_main, strict_json


def config_with(tmp_path: Path, contract_config: Path, store: str = "") -> Path:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n{store}\n' +
                   contract_config.read_text().replace("[daemon]", "[daemon_unused]"))
    return cfg


async def seed(path: Path) -> None:
    store = SqliteStore(path)
    now = wall_clock_ms()
    await store.put_snapshot(AccountSnapshot("main", now, 1.18, "warn", {}, ""))
    await store.put_alert(AlertRecord("main", "warn", now - 60_000, now - 60_000, 1.17))
    await store.journal("execution", "main", now - 7_200_000, {"plan_id": "old", "level": "act", "fills": []})
    await store.journal("execution", "main", now - 60_000, {
        "plan_id": "p1", "level": "act", "fills": [{"symbol": "BTC/USDT", "side": "sell", "amount": 0.5,
                                                     "price": 41000.0, "fee": 20.5}],
        "repays": [{"asset": "USDT", "amount": 20000.0}]})
    await store.close()


def test_status_journal_and_kill_switch(tmp_path: Path, contract_config: Path) -> None:
    cfg = config_with(tmp_path, contract_config)
    asyncio.run(seed(tmp_path / "state" / "state.sqlite"))

    on = cli("kill-switch", "on", "--config", str(cfg), "--reason", "desk review")
    assert on.returncode == 0 and "kill switch ON" in on.stdout and "desk review" in on.stdout
    status = cli("status", "--config", str(cfg))
    assert status.returncode == 0, status.stderr
    assert "trading: STOPPED by the kill switch (desk review)" in status.stdout
    assert "main: health 1.1800, level warn" in status.stdout
    assert "main warn since" in status.stdout
    doc = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert doc["kill_switch"]["engaged"] and [a["account"] for a in doc["accounts"]] == ["main"]
    assert [e["plan_id"] for e in doc["last_actions"]] == ["old", "p1"]

    recent = cli("journal", "--config", str(cfg), "--since", "1h")
    assert recent.stdout.count("\n") == 1 and "sell 0.5 BTC/USDT @ 41000; repay 20000 USDT" in recent.stdout
    lines = cli("journal", "--config", str(cfg), "--json").stdout.splitlines()
    assert [json.loads(line)["plan_id"] for line in lines] == ["old", "p1"]

    off = cli("kill-switch", "off", "--config", str(cfg))
    assert off.returncode == 0 and "trading allowed" in off.stdout
    assert "trading: allowed" in cli("status", "--config", str(cfg)).stdout


def test_bad_input_and_an_unreachable_store_are_one_line(tmp_path: Path, contract_config: Path) -> None:
    cfg = config_with(tmp_path, contract_config)
    assert_user_error(cli("journal", "--config", str(cfg), "--since", "an hour"), "--since")
    down = config_with(tmp_path, contract_config,
                       f'[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:{free_port()}/0"')
    for args in (["status"], ["kill-switch", "on"], ["journal"]):
        assert_user_error(cli(*args, "--config", str(down)), "store (redis)", "unavailable")


def test_status_and_journal_json_are_strict(tmp_path: Path, contract_config: Path, capsys) -> None:
    cfg = config_with(tmp_path, contract_config)

    async def seed_non_finite(path: Path) -> None:
        store = SqliteStore(path)
        now = wall_clock_ms()
        await store.put_snapshot(AccountSnapshot("main", now, math.inf, None, {}, ""))  # no debt: infinite health
        await store.put_alert(AlertRecord("main", "warn", now, now, math.nan))
        await store.journal("execution", "main", now, {"plan_id": "p", "fills": [{"symbol": "BTC/USDT", "side": "sell",
                                                       "amount": 1.0, "price": 1.0, "fee": math.inf}]})
        await store.close()

    asyncio.run(seed_non_finite(tmp_path / "state" / "state.sqlite"))
    code, out, err = run_main(capsys, "status", "--config", str(cfg), "--json")
    assert (code, err) == (0, ""), err
    doc = strict_json(out)
    assert (doc["accounts"][0]["health"], doc["alerts"][0]["worst_health"]) == (None, None)
    code, out, err = run_main(capsys, "journal", "--config", str(cfg), "--json")
    assert (code, err) == (0, ""), err
    (entry,) = [strict_json(line) for line in out.splitlines()]
    assert entry["fills"][0]["fee"] is None
