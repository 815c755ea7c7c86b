"""Config reload (SIGHUP): new levels, weights, channels and accounts apply; risk and alert state stay."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import structlog

from monitor.accounts.static import build_books
from monitor.config import load_settings
from monitor.model import EventKind, wall_clock_ms
from monitor.reload import Reloader
from monitor.risk.engine import RiskEngine
from monitor.risk.portfolio import evaluate
from monitor.service import run_daemon
from monitor.store.sqlite import MemoryStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.test_daemon import ListNotifier, PushFeed, crash_ticks, fast_settings
from tests.test_http import push_each
from tests.test_sdnotify import FakeSystemd

REPO = Path(__file__).resolve().parents[1]

WATCH_LEVEL = """
  [[accounts.levels]]
  name = "watch"
  health = 2.0
"""
SECOND_ACCOUNT = """
[[accounts]]
name = "second"
holdings = { BTC = 1.0, USDT = -20000 }
  [[accounts.levels]]
  name = "warn2"
  health = 3.0
"""


def firing(notifier: ListNotifier, account: str, level: str, kind: EventKind = EventKind.FIRING) -> list:
    return [e for e in notifier.events if (e.account, e.level, e.kind) == (account, level, kind)]


async def test_reload_keeps_state_applies_changes_and_rejects_a_bad_file(tmp_path: Path, contract_config: Path) -> None:
    text = contract_config.read_text()
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    notifier, feed = ListNotifier(), PushFeed()
    d = build_daemon(fast_settings(cfg), default_registry(), store=MemoryStore(), feeds=[feed],
                     notifiers=[(notifier, None)])
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(d, stop))
    reloader = Reloader(str(cfg), default_registry(), notifiers=lambda settings: [(notifier, None)])
    try:
        await asyncio.wait_for(feed.connected.wait(), 10)
        ticks = iter(crash_ticks(wall_clock_ms()))  # event time now: the daemon's clock never makes them stale
        while not d.monitor.rules.state[0].firing_since:  # down through warn
            await push_each(d, feed, [next(ticks), next(ticks)])
        old = d.monitor
        state_before = replace(old.rules.state[0], firing_since=dict(old.rules.state[0].firing_since))
        prices = old.engine.price_map()

        # A new level, a moved threshold, a new weight, a new account.
        cfg.write_text(text.replace("weights = { ETH = 0.825 }", "weights = { ETH = 0.80 }")
                       .replace("health = 1.15", "health = 1.12")
                       .replace('  action = "alert"\n', '  action = "alert"\n' + WATCH_LEVEL, 1) + SECOND_ACCOUNT)
        assert await reloader.reload(d)
        m = d.monitor
        assert m is not old and m.engine.price_map() == prices
        assert d.snapshots.monitor is m  # snapshots are written from the new books
        main, second = m.engine.account_index["main"], m.engine.account_index["second"]
        book = m.engine.books[main]
        assert book.weights["ETH"] != old.engine.books[0].weights["ETH"]
        assert m.engine.health[main] == pytest.approx(evaluate(book, prices).health, rel=1e-12)
        assert m.engine.health[main] < old.engine.health[0]  # ETH now counts at 80%, not 82.5%
        levels = [lv.name for lv in m.rules.accounts[main].levels]
        assert levels == ["watch", "warn", "act"]
        assert m.rules.state[main].firing_since[levels.index("warn")] == state_before.firing_since[0]
        assert m.rules.accounts[main].levels[2].threshold == 1.12
        assert levels.index("watch") in m.rules.state[main].firing_since  # the new level fires at once...
        await notifier.wait_for(lambda e: (e.account, e.level) == ("second", "warn2") and e.kind == EventKind.FIRING)
        assert firing(notifier, "main", "watch") == []  # ...but warn, deeper, inhibits its notice
        assert m.engine.health[second] == pytest.approx(prices["BTC"] * 0.95 / 20000)
        assert len(firing(notifier, "main", "warn")) == 1  # still firing: not announced again

        while not d.settled.is_set():  # on down until the act level (now at 1.12) has repaid debt
            await push_each(d, feed, [next(ticks), next(ticks)])
        book_before = d.monitor.engine.books[main]
        assert book_before.exposures["USDT"].debt < 50000  # the repay moved the holdings away from the config
        actions_before = d.monitor.rules.state[main].actions_today
        assert actions_before == 1

        # Back to the first file: the dropped level and account resolve; the fills stay.
        cfg.write_text(text)
        assert await reloader.reload(d)
        assert list(d.monitor.engine.account_index) == ["main"]
        assert d.monitor.engine.books[0].exposures == book_before.exposures
        assert d.monitor.rules.state[0].actions_today == actions_before
        gone = await notifier.wait_for(lambda e: (e.account, e.kind) == ("second", EventKind.RESOLVED))
        assert gone.detail == "account removed from the config"
        await d.alerts.drain()  # the dropped level's resolution came in the same batch
        assert "watch" not in d.alerts.policy.active.get("main", {})

        # A bad file: one log line naming the culprit; the running config stays.
        running = d.monitor
        cfg.write_text(text.replace("confirm_s = 30", "confirm_sec = 30"))
        with structlog.testing.capture_logs() as logs:
            assert not await reloader.reload(d)
        rejected = [e for e in logs if e["event"] == "config reload rejected, the running config stays"]
        assert len(rejected) == 1 and "accounts.0.levels.1.confirm_sec: unknown key" in rejected[0]["error"]
        assert d.monitor is running and reloader.rejected == 1
        cfg.write_text(text.replace("target = 1.4", "target = 1.1"))  # below its level: caught building the rules
        with structlog.testing.capture_logs() as logs:
            assert not await reloader.reload(d)
        assert [e["error"] for e in logs if e["event"].startswith("config reload rejected")] == [
            "accounts (main).levels (act): the target (health 1.1) must be above the level (health 1.15), "
            "or an action could never clear it"]
        assert d.monitor is running
        cfg.write_text(text.replace('mode = "dry_run"', 'mode = "live"'))
        assert not await reloader.reload(d)
        assert d.settings.execution.mode == "dry_run"
    finally:
        stop.set()
    assert await asyncio.wait_for(task, 15) == 0


def test_set_book_changes_model_and_scale_exactly(contract_config: Path) -> None:
    """An account's model and its parameter change in place, as a fresh engine would compute it."""
    settings = load_settings(contract_config)
    books = build_books(settings)
    engine = RiskEngine(books, list(settings.assets), {"USDT": 1.0})
    for k, p in ((0, 41000.0), (1, 2100.0)):
        engine.apply(k, p, 1)
    changed = replace(books[0], model="unified", scale=1.0, param=1.0)
    engine.set_book(changed)
    ltv = replace(changed, model="ltv", scale=0.8, param=0.8)
    engine.set_book(ltv)
    fresh = RiskEngine([ltv], list(settings.assets), {"USDT": 1.0})
    for k, p in ((0, 41000.0), (1, 2100.0)):
        fresh.apply(k, p, 1)
    assert engine.health[0] == pytest.approx(fresh.health[0], rel=1e-12)
    assert engine.health[0] == pytest.approx(evaluate(ltv, engine.price_map()).health, rel=1e-12)
    engine.set_book(changed)  # unified: debt leaves the denominator, as the model says
    assert engine.health[0] == pytest.approx(evaluate(changed, engine.price_map()).health, rel=1e-12)
    assert not np.isclose(engine.health[0], fresh.health[0])


async def test_sighup_reloads_with_sd_notify(tmp_path: Path) -> None:
    """The real command under a fake systemd: SIGHUP -> RELOADING=1 ... READY=1, bad file rejected in one line."""
    text = (REPO / "examples" / "offline.toml").read_text() + f'\nstate_dir = "{tmp_path / "state"}"\n'
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    systemd = FakeSystemd(tmp_path / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "monitor", "--log-format", "json", "run",
                                                "--config", str(cfg), cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await systemd.wait_for("READY", "1", timeout=30)
        for new_text in (text.replace("health = 1.25", "health = 1.3"), text.replace("health = 1.25", "helth = 1.3")):
            cfg.write_text(new_text)
            mark = len(systemd.fields)
            proc.send_signal(signal.SIGHUP)
            await systemd.wait_for("RELOADING", "1", after=mark)
            assert "MONOTONIC_USEC" in systemd.fields[mark]
            await systemd.wait_for("READY", "1", after=mark + 1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = (await proc.stderr.read()).decode().splitlines()
    assert sum('"config reloaded"' in line for line in lines) == 1
    rejected = [line for line in lines if "config reload rejected" in line]
    assert len(rejected) == 1 and "helth: unknown key" in rejected[0]
    assert not any("Traceback" in line for line in lines)


async def test_reload_starts_new_channels_and_stops_removed_ones(contract_config: Path) -> None:
    from monitor.alerts.build import build_alert_manager
    from monitor.config import parse_settings
    from monitor.model import LevelEvent

    raw = load_settings(contract_config).model_dump(exclude_none=True)
    raw["alerts"] = {"group_wait_s": 0}
    settings = parse_settings(raw)
    store, order = MemoryStore(), {"main": ["warn", "act"]}
    a, b = ListNotifier(name="a"), ListNotifier(name="b")

    def manager(*channels):
        return build_alert_manager(settings, store, order, [(n, None) for n in channels], clock_ms=lambda: 0)

    m = manager(a)
    task = asyncio.create_task(m.run())
    try:
        m.submit(LevelEvent("main", "warn", EventKind.FIRING, 1.25, 1.25, 1_000))
        await a.wait_for(lambda e: e.level == "warn")
        m.reconfigure(manager(a, b), unchanged=frozenset({"a"}))  # b is new; a keeps its worker
        m.submit(LevelEvent("main", "act", EventKind.FIRING, 1.1, 1.1, 2_000))
        await b.wait_for(lambda e: e.level == "act")
        await a.wait_for(lambda e: e.level == "act")
        m.reconfigure(manager(b))  # a removed
        m.submit(LevelEvent("main", "act", EventKind.RESOLVED, 1.5, 1.5, 3_000, min_health=1.1, since_ms=2_000))
        await b.wait_for(lambda e: e.kind == EventKind.RESOLVED)
        await m.drain()
        assert [e.kind for e in a.events] == [EventKind.FIRING, EventKind.FIRING]  # nothing after its removal
        assert len(firing(a, "main", "warn")) == 1  # what fired before the reload is not announced again
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
