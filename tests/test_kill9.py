"""kill -9 while rebalances are under way, then a restart: nothing executed twice, the
journal intact, every plan closed, and monitoring back. (Where the kill lands varies from
run to run; test_restart.py pins the case of a plan claimed but never recorded.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from monitor.store.sqlite import SqliteStore
from tests.conftest import REPO_ROOT

CONFIG = """
[execution]
mode = "dry_run"
[daemon]
state_dir = "{state}"
status_every_s = 1
snapshot_every_s = 1
[assets.BTC]
price = "BTC/USDT"
weight = 0.9
[assets.USDT]
price = 1.0
{accounts}
[[feeds]]
name = "sim"
symbols = ["BTC/USDT"]
  [feeds.simulated]
  start = {{ "BTC/USDT" = 60000 }}
  clock = "market"
  step_ms = 5000
  interval_s = 0.01
  crash_at_step = 5
  crash_depth = 0.5
  crash_steps = 200
  jump_prob = 0
"""
ACCOUNT = """
[[accounts]]
name = "acct{n}"
holdings = {{ BTC = 2.0, USDT = -{debt} }}
  [[accounts.levels]]
  name = "act"
  health = 1.25
  action = "rebalance"
  strategy = "repay_debt"
  target = 1.4
  cooldown_s = 30
"""


class Daemon:
    """The daemon as a separate process; its JSON log lines are read as they come."""

    def __init__(self, config: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor", "--log-format", "json", "run", "--config",
                                      str(config)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[dict] = []

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        """Reads log lines until one has this event (a reader thread bounds the wait)."""
        found: list[dict] = []

        def read():
            for raw in self.proc.stderr:
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                self.lines.append(line)
                if line.get("event") == event:
                    found.append(line)
                    return
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        assert found, f"no {event!r} within {timeout}s; last lines: {self.lines[-5:]}"
        return found[0]

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)


def test_kill_9_while_rebalancing_then_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    accounts = "".join(ACCOUNT.format(n=n, debt=80000 + 2000 * n) for n in range(8))
    config = tmp_path / "cfg.toml"
    config.write_text(CONFIG.format(state=state, accounts=accounts))

    first = Daemon(config)
    first.wait_for("rebalance planned")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # no shutdown code ran

    second = Daemon(config)
    loaded = second.wait_for("state loaded")
    second.wait_for("account")  # monitoring is back: a status line with fresh prices
    assert second.stop(signal.SIGINT) == 0

    store = SqliteStore(state / "state.sqlite")
    try:
        journal = asyncio.run(store.read_journal())
        plans = dict(store._db.execute("SELECT plan_id, state FROM plans"))
        open_left = asyncio.run(store.open_plans())
    finally:
        asyncio.run(store.close())
    executed = [e["plan_id"] for e in journal if e["kind"] == "execution"]
    assert len(executed) == len(set(executed))  # no plan executed twice
    assert all(plans[p] == "done" for p in executed)
    assert open_left == []  # every plan closed: done, abandoned or failed
    assert loaded["plans_reconciled"] == sum(1 for ln in second.lines if ln.get("event") ==
                                             "plan interrupted by a restart, reconciled")
