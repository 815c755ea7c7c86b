"""One daemon per state: a second `run` on a state is refused naming the first (until the
kernel frees the lock of a killed one), another config's state is refused unless adopted, and
a Redis that refuses the URL's password or database is a configuration error at start."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from monitor.config import Settings, parse_settings
from monitor.errors import ConfigError
from monitor.statelock import ID_FILE, LOCK_FILE, Holder, StateInUse, hold_state
from tests.conftest import REPO_ROOT

OFFLINE = (REPO_ROOT / "examples" / "offline.toml").read_text()
PASSWORD = "s3cret-Redis-pw"


class Run:
    """`collateral-monitor run` as a process; its JSON log lines are read as they come."""

    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor", "--log-format", "json", "run", "--config",
                                      str(config), *extra], cwd=config.parent, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.events: list[str] = []
        self.seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stderr:  # drained to the end: the daemon never blocks on a full pipe
            try:
                event = orjson.loads(raw).get("event", "")
            except orjson.JSONDecodeError:
                event = raw.decode(errors="replace")
            with self.seen:
                self.events.append(event)
                self.seen.notify_all()

    def wait_for(self, event: str, timeout: float = 60.0) -> None:
        with self.seen:
            assert self.seen.wait_for(lambda: event in self.events or self.proc.poll() is not None, timeout)
            assert event in self.events, f"no {event!r}; the process said {self.events[-5:]}"

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)


def refused_run(config: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    """A `run` that must end at once with exit 2 and one line on stderr; returns that line."""
    proc = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=60, cwd=config.parent,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def offline_config(path: Path, state: Path, extra: str = "") -> Path:
    path.write_text(OFFLINE + f'state_dir = "{state}"\n' + extra)  # offline.toml ends in [daemon]
    return path


ANOTHER_ACCOUNT = """
[[accounts]]
name = "second"
holdings = { BTC = 1.0, USDT = -20000 }
  [[accounts.levels]]
  name = "warn"
  health = 1.25
"""


# -- SQLite: the lock file ---------------------------------------------------------------------
def test_second_run_on_a_state_exits_2_naming_the_first_until_kill_9_frees_it(tmp_path: Path) -> None:
    config = offline_config(tmp_path / "desk.toml", tmp_path / "state")
    first = Run(config)
    try:
        first.wait_for("daemon started")
        line = refused_run(config)
        assert f"PID {first.proc.pid} on " in line and "in use by another daemon" in line
        assert str(tmp_path / "state" / LOCK_FILE) in line
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # no shutdown code ran: the kernel drops the flock
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    again = Run(config)
    try:
        again.wait_for("daemon started")
        holder = Holder.parse((tmp_path / "state" / LOCK_FILE).read_bytes())
        assert holder is not None and holder.pid == again.proc.pid
    finally:
        assert again.stop() == 0


def test_another_config_on_the_same_state_is_refused_until_adopted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    a = offline_config(tmp_path / "a.toml", state)
    b = offline_config(tmp_path / "b.toml", state)
    first = Run(a)
    first.wait_for("daemon started")
    assert first.stop() == 0
    line = refused_run(b)
    assert f"belongs to another config ({a})" in line and "--adopt-state" in line and "daemon.state_dir" in line

    offline_config(a, state, ANOTHER_ACCOUNT)
    edited = Run(a)  # an edit of the same config (here: an account more) is the same deployment
    edited.wait_for("daemon started")
    assert edited.stop() == 0

    adopted = Run(b, "--adopt-state")
    adopted.wait_for("daemon started")
    assert "state adopted from another config" in adopted.events
    assert adopted.stop() == 0
    assert (state / ID_FILE).read_text().strip() == str(b)


def settings_for(state: Path, **sections) -> Settings:
    data = tomllib.loads(OFFLINE)
    data["daemon"] = {**data.get("daemon", {}), "state_dir": str(state), **sections.pop("daemon", {})}
    return parse_settings({**data, **sections}, "test")


async def test_a_shared_state_id_and_a_state_from_before_identities_are_not_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    shared = settings_for(state, daemon={"state_id": "desk-a"})
    async with hold_state(shared, tmp_path / "here.toml"):
        with pytest.raises(StateInUse):  # held: the lock comes first
            async with hold_state(shared, tmp_path / "there.toml"):
                pass
    async with hold_state(shared, tmp_path / "there.toml"):  # the same state_id from another file: one deployment
        pass
    (state / ID_FILE).unlink()  # a state written before identities were recorded
    plain = settings_for(state)
    async with hold_state(plain, tmp_path / "x.toml"):
        pass
    assert (state / ID_FILE).read_text().strip() == str((tmp_path / "x.toml").resolve())


async def test_ha_instances_share_a_sqlite_state(tmp_path: Path) -> None:
    ha = settings_for(tmp_path / "state", ha={"enabled": True})
    async with hold_state(ha, tmp_path / "c.toml"), hold_state(ha, tmp_path / "c.toml"):
        pass


# -- Redis: the lock key, and a configuration Redis refuses ------------------------------------
def redis_settings(url_env: str, prefix: str, state: Path, **ha) -> Settings:
    return settings_for(state, store={"backend": "redis", "url_env": url_env, "prefix": prefix},
                        ha={"lease_ttl_s": 0.3, **ha})


@pytest.fixture
def redis_env(redis_session, monkeypatch) -> str:
    monkeypatch.setenv("CM_TEST_REDIS_URL", redis_session.url)
    return "CM_TEST_REDIS_URL"


async def test_a_second_daemon_on_a_redis_prefix_is_refused(redis_env: str, tmp_path: Path) -> None:
    settings = redis_settings(redis_env, "lock-two", tmp_path)
    async with hold_state(settings, tmp_path / "c.toml"):
        with pytest.raises(StateInUse, match=f"PID {os.getpid()} on .* \\(Redis key lock-two:daemon"):
            async with hold_state(settings, tmp_path / "c.toml"):
                pass
    async with hold_state(settings, tmp_path / "c.toml"):  # released on exit: free again at once
        pass
    ha = redis_settings(redis_env, "lock-two", tmp_path, enabled=True)
    async with hold_state(ha, tmp_path / "c.toml"), hold_state(ha, tmp_path / "c.toml"):
        pass  # [ha]: several instances by design, the trading lease decides


async def test_another_config_on_a_redis_prefix_is_refused_unless_adopted(redis_env: str, tmp_path: Path) -> None:
    settings = redis_settings(redis_env, "lock-id", tmp_path)
    async with hold_state(settings, tmp_path / "a.toml"):
        pass
    with pytest.raises(StateInUse, match="belongs to another config .* store.prefix, or run with --adopt-state"):
        async with hold_state(settings, tmp_path / "b.toml"):
            pass
    async with hold_state(settings, tmp_path / "b.toml", adopt=True):
        pass
    r = aioredis.from_url(os.environ[redis_env])
    assert (await r.get("lock-id:state_id")).decode() == str((tmp_path / "b.toml").resolve())
    await r.aclose()


async def test_a_dead_holder_on_this_host_is_taken_over_and_a_live_one_takes_it_back(
        redis_env: str, tmp_path: Path) -> None:
    settings = redis_settings(redis_env, "lock-dead", tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    r = aioredis.from_url(os.environ[redis_env])
    await r.set("lock-dead:daemon", Holder(dead.pid, socket.gethostname(), "then").dump(), px=60_000)
    lost = asyncio.Event()
    async with hold_state(settings, tmp_path / "c.toml", on_lost=lost.set) as held:  # not refused
        # Another live daemon takes the key (ours lapsed during a pause): this one must stop.
        await r.set("lock-dead:daemon", Holder(1, "elsewhere", "now").dump(), px=60_000)
        await asyncio.wait_for(lost.wait(), 5)
    assert "in use by another daemon: PID 1 on elsewhere" in held.lost
    assert Holder.parse(await r.get("lock-dead:daemon")).host == "elsewhere"  # not released: not ours
    await r.aclose()


async def test_redis_down_at_start_claims_the_state_when_it_answers(redis_server, tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("CM_TEST_REDIS_URL", redis_server.url)
    redis_server.stop()
    async with hold_state(redis_settings("CM_TEST_REDIS_URL", "late", tmp_path), tmp_path / "c.toml") as held:
        assert not held.claimed  # monitoring goes on meanwhile
        redis_server.start()

        async def claimed() -> None:
            while not held.claimed:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(claimed(), 10)
        assert held.held


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory):
    from tests.redis_server import RedisServer
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("auth, db, says", [
    ("", "0", "password in the URL is wrong or missing"),  # NOAUTH
    (":wrong-password@", "0", "password in the URL is wrong or missing"),  # WRONGPASS
    (f":{PASSWORD}@", "99", "invalid DB index"),
])
async def test_a_redis_refusing_the_url_is_a_config_error(locked_redis, monkeypatch, tmp_path: Path,
                                                          auth: str, db: str, says: str) -> None:
    monkeypatch.setenv("CM_TEST_REDIS_URL", f"redis://{auth}127.0.0.1:{locked_redis.port}/{db}")
    with pytest.raises(ConfigError) as err:
        async with hold_state(redis_settings("CM_TEST_REDIS_URL", "auth", tmp_path), tmp_path / "c.toml"):
            pass
    assert str(err.value).startswith("store.url_env (CM_TEST_REDIS_URL): ") and says in str(err.value)
    assert "wrong-password" not in str(err.value) and PASSWORD not in str(err.value)


def test_wrong_redis_password_run_exits_2_in_one_line(locked_redis, tmp_path: Path) -> None:
    config = offline_config(tmp_path / "r.toml", tmp_path / "state",
                            '[store]\nbackend = "redis"\nurl_env = "CM_TEST_REDIS_URL"\nprefix = "run-auth"\n')
    line = refused_run(config, env={"CM_TEST_REDIS_URL": f"redis://:wrong-password@127.0.0.1:{locked_redis.port}/0"})
    assert "password in the URL is wrong or missing" in line and "wrong-password" not in line


def test_two_runs_on_one_redis_prefix(redis_session, tmp_path: Path) -> None:
    config = offline_config(tmp_path / "r.toml", tmp_path / "state",
                            '[store]\nbackend = "redis"\nurl_env = "CM_TEST_REDIS_URL"\nprefix = "run-two"\n')
    env = {"CM_TEST_REDIS_URL": redis_session.url}
    first = Run(config, env=env)
    try:
        first.wait_for("daemon started")
        line = refused_run(config, env=env)
        assert f"PID {first.proc.pid} on " in line and "Redis key run-two:daemon" in line
    finally:
        assert first.stop() == 0

    async def key() -> bytes | None:
        r = aioredis.from_url(redis_session.url)
        try:
            return await r.get("run-two:daemon")
        finally:
            await r.aclose()
    assert asyncio.run(key()) is None  # released on a clean stop: the next start need not wait
