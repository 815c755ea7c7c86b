"""Chaos, seeded and bounded: real daemon processes on a simulated crash, paper execution, a
webhook receiver on loopback, kill -9 at random instants and a restart on the same state; on
Redis, redis-server is also stopped, killed and restarted mid-run, and down at one start.

What must hold at the end, whatever instants the kills hit:
- every transition committed to the store was delivered (at least once, by its stable id);
- no transition was delivered twice under two ids (a FIRING never follows a FIRING);
- no plan executed twice, and the journal agrees with every ledger;
- no order while the state was not loaded.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from monitor.alerts.content import delivery_id
from monitor.store.sqlite import SqliteStore
from tests.conftest import REPO_ROOT

KILLS = 16
ACCOUNTS = 10
CONFIG = """
[execution]
mode = "dry_run"
[daemon]
state_dir = "{state}"
status_every_s = 1
snapshot_every_s = 0.5
{store}
[alerts]
group_wait_s = 0.05
retry_base_s = 0.05
retry_max_s = 0.2
[[notifiers]]
name = "hook"
kind = "webhook"
url_env = "CHAOS_HOOK_URL"
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
  interval_s = 0.01
  crash_at_step = 10
  crash_depth = {depth}
  crash_steps = 40
  recover_steps = 40
  vol_per_step = 0.001
  jump_prob = 0
"""
ACCOUNT = """
[[accounts]]
name = "acct{n}"
holdings = {{ BTC = 2.0, USDT = -{debt} }}
  [[accounts.levels]]
  name = "warn"
  health = 1.35
  [[accounts.levels]]
  name = "act"
  health = 1.2
  action = "rebalance"
  strategy = "repay_debt"
  target = 1.45
  cooldown_s = 1
"""
REDIS_STORE = """
[store]
backend = "redis"
url_env = "CHAOS_REDIS_URL"
prefix = "chaos"
"""


class Receiver:
    """A webhook receiver on loopback: records every alert of every POST, duplicates included."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.extend(json.loads(body)["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Process:
    """One daemon process; its JSON log lines are collected as they come."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor", "--log-format", "json", "run", "--config",
                                      str(config)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
        self.lines: list[dict] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stderr:
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                line = {"event": "unparsed", "raw": raw.decode(errors="replace")}
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        line = self.seen(event, timeout)
        assert line is not None, f"no {event!r} within {timeout}s: {self.lines[-5:]}"
        return line

    def seen(self, event: str, timeout: float) -> dict | None:
        def found():
            return next((ln for ln in self.lines if ln.get("event") == event), None)
        with self._seen:
            return self._seen.wait_for(found, timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(30)


def events(p: Process) -> list[str]:
    return [ln.get("event", "") for ln in p.lines]


def check_no_order_before_state(p: Process) -> None:
    seen = events(p)
    if "state not loaded: monitoring and alerting only, no order and no state written until the store answers" in seen:
        loaded_at = seen.index(next((e for e in seen if e.startswith("state loaded late")), "")) if any(
            e.startswith("state loaded late") for e in seen) else len(seen)
        assert "rebalance executed" not in seen[:loaded_at]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_kill_9_at_random_instants_loses_nothing_and_repeats_nothing(backend: str, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    rng = random.Random(20261203)
    receiver = Receiver()
    env = {"CHAOS_HOOK_URL": receiver.url}
    redis = None
    if backend == "redis":
        from tests.redis_server import RedisServer
        redis = RedisServer(tmp_path / "redis")
        (tmp_path / "redis").mkdir()
        redis.start()
        env["CHAOS_REDIS_URL"] = redis.url
    state = tmp_path / "state"
    config = tmp_path / "chaos.toml"
    accounts = "".join(ACCOUNT.format(n=n, debt=70000 + 2500 * n) for n in range(ACCOUNTS))
    processes: list[Process] = []
    try:
        for n in range(KILLS + 1):
            # Each run replays a crash deeper than the last: accounts rebalanced before breach again.
            config.write_text(CONFIG.format(state=state, store=REDIS_STORE if redis else "", accounts=accounts,
                                            depth=round(0.3 + 0.03 * n, 2)))
            if n == KILLS:
                break
            if redis is not None and n == KILLS // 2:  # down at this start: up again while it runs
                redis.stop()
                p = Process(config, env)
                processes.append(p)
                p.wait_for("state not loaded: monitoring and alerting only, no order and no state written "
                           "until the store answers")
                redis.start()
                p.wait_for("state loaded late: trading and state writes resume")
            else:
                p = Process(config, env)
                processes.append(p)
                p.wait_for("daemon started")
            if redis is not None and n % 5 == 2:  # redis killed mid-run, back before the next start
                p.wait_for("rebalance planned")
                redis.proc.kill()
                redis.proc.wait(10)
                redis.start()
            # Where the kill lands: a random instant after a random event (if it comes within 3 s).
            p.seen(rng.choice(["daemon started", "rebalance planned", "rebalance executed", "account"]), 3.0)
            threading.Event().wait(rng.uniform(0, 0.3))
            p.kill()
        final = Process(config, env)
        processes.append(final)
        final.wait_for("state loaded")
        final.wait_for("account")  # monitoring is back on fresh prices
        assert final.stop() == 0
    finally:
        for p in processes:
            if p.proc.poll() is None:
                p.kill()
        receiver.close()

    for p in processes:
        check_no_order_before_state(p)
    committed, journal, snapshots = asyncio.run(read_state(backend, state, redis))
    if redis is not None:
        redis.stop()

    # Nothing lost: every alert transition the store holds reached the receiver.
    received = {a["id"]: a for a in receiver.alerts}
    assert committed, "the run committed no alert: the crash did not reach the levels"
    missing = [k for k in committed if delivery_id(k) not in received]
    assert missing == []
    # Nothing twice: per account and level, FIRING and RESOLVED alternate (a repeat is a reminder).
    by_level: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for a in sorted(received.values(), key=lambda a: a["at"]):
        if a["level"] != "stale" and a["repeat"] == 0:
            by_level[(a["account"], a["level"])].append(a)
    for key, seq in by_level.items():
        states = [a["state"] for a in seq]
        assert all(x != y for x, y in zip(states, states[1:])), (key, [(a["state"], a["at"]) for a in seq])
    # No plan executed twice; the journal and every ledger agree.
    executions = [e for e in journal if e["kind"] in ("execution", "reconciled")]
    plan_ids = [e["plan_id"] for e in executions]
    assert len(plan_ids) == len(set(plan_ids))
    assert executions, "no plan executed: the kills proved nothing about trades"
    for n in range(ACCOUNTS):
        name = f"acct{n}"
        fills = [f for e in executions if e["account"] == name for f in e["fills"] if f["symbol"] == "BTC/USDT"]
        sold = sum(f["amount"] * (1 if f["side"] == "sell" else -1) for f in fills)
        proceeds = sum((f["amount"] * f["price"]) * (1 if f["side"] == "sell" else -1) - f["fee"] for f in fills)
        book = snapshots[name].book
        btc, usdt = book.get("BTC", {}), book.get("USDT", {})
        assert btc.get("qty", 0.0) == pytest.approx(2.0 - sold, abs=1e-9), name
        # A repay moves USDT from what is held to what is owed: the net is the initial debt plus proceeds.
        net = usdt.get("qty", 0.0) - usdt.get("debt", 0.0)
        assert net == pytest.approx(-(70000 + 2500 * n) + proceeds, abs=1e-6), name


async def read_state(backend: str, state: Path, redis) -> tuple[list[str], list[dict], dict]:
    if backend == "sqlite":
        store = SqliteStore(state / "state.sqlite")
        keys = [k for (k,) in store._db.execute("SELECT key FROM outbox WHERE channel = 'hook'")]
    else:
        from monitor.store.redis import RedisStore
        store = RedisStore(redis.url, "chaos")
        r = store._r
        keys = [k.decode() for k in await r.zrange("chaos:outbox:hook:done", 0, -1)]
        keys += [k.decode() for k in await r.zrange("chaos:outbox:hook:queue", 0, -1)]
    try:
        journal = await store.read_journal()
        snapshots = await store.snapshots()
    finally:
        await store.close()
    return [k for k in keys if not k.startswith("notice\x1f")], journal, snapshots
