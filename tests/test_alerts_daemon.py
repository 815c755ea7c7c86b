"""Alerting in the running daemon, against local Slack / Telegram / webhook servers.

Nothing sleeps to wait for a result: tests wait on the fakes' arrivals or on daemon
state with timeouts.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from pathlib import Path

import pytest
import structlog

from monitor.config import parse_settings
from monitor.model import PriceTick, iso_ms, wall_clock_ms
from monitor.service import run_daemon
from monitor.store.sqlite import MemoryStore, SqliteStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.fake_services import HANG, TELEGRAM_TOKEN, FakeSlack, FakeTelegram, FakeWebhook

CHAT = "-1001234567890"


def settings_for(n: int, notifiers: list[dict], alerts: dict | None = None, state_dir: Path | str = "state"):
    return parse_settings({
        "daemon": {"state_dir": str(state_dir), "restart_backoff_s": 0.01},
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.8}, "USDT": {"price": 1.0, "weight": 1.0}},
        "accounts": [{"name": f"acct-{i:04d}", "holdings": {"BTC": 1.0, "USDT": -30000.0},
                      "levels": [{"name": "warn", "health": 1.3}, {"name": "critical", "health": 1.1}]}
                     for i in range(n)],
        "notifiers": notifiers,
        "alerts": {"retry_base_s": 0.05, "retry_max_s": 0.5, **(alerts or {})},
    })


class QueueFeed:
    """Pushes the ticks the test hands it, when it hands them."""

    name = "test-feed"
    symbols = ("BTC/USDT",)

    def __init__(self, base_ms: int | None = None) -> None:
        self.q: asyncio.Queue[PriceTick] = asyncio.Queue()
        self.pushed = 0
        self.base_ms = wall_clock_ms() if base_ms is None else base_ms  # live event time: never stale

    def push(self, *prices: float, at_s: float = 0) -> None:
        for n, p in enumerate(prices):
            self.q.put_nowait(PriceTick("BTC/USDT", p, self.base_ms + int(at_s * 1000) + n * 1000))
            self.pushed += 1

    async def run(self, sink) -> None:
        while True:
            sink(await self.q.get())


async def eventually(pred, timeout: float = 15.0) -> None:
    async def loop():
        while not pred():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)


class Running:
    """A daemon running in the background of a test."""

    def __init__(self, d) -> None:
        self.d = d
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_daemon(d, self.stop))

    async def close(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 20)


@pytest.fixture
async def fakes(monkeypatch):
    slack, telegram, hook = FakeSlack(), FakeTelegram(chats=(CHAT, "42")), FakeWebhook()
    for s in (slack, telegram, hook):
        await s.start()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TELEGRAM_TOKEN)
    monkeypatch.setenv("HOOK_URL", hook.url + "/hook")
    yield slack, telegram, hook
    for s in (slack, telegram, hook):
        await s.stop()


def telegram_cfg(telegram: FakeTelegram, **kw) -> dict:
    return {"name": "ops-telegram", "kind": "telegram", "token_env": "TELEGRAM_BOT_TOKEN", "chat_id": CHAT,
            "api_base": telegram.url, **kw}


SLACK = {"name": "desk-slack", "kind": "slack", "webhook_url_env": "SLACK_WEBHOOK_URL"}
HOOK = {"name": "hook", "kind": "webhook", "url_env": "HOOK_URL"}


def hook_alerts(hook: FakeWebhook) -> list[dict]:
    return [a for r in hook.received if r.path == "/hook" for a in r.json["alerts"]]


async def test_burst_of_1000_accounts_is_one_digest_per_channel_within_rate_limits(fakes) -> None:
    slack, telegram, hook = fakes
    settings = settings_for(1000, [telegram_cfg(telegram), SLACK, HOOK], {"group_wait_s": 1.0})
    feed = QueueFeed()
    run = Running(build_daemon(settings, default_registry(), store=MemoryStore(), feeds=[feed]))
    feed.push(60000, 40000)  # every account from health 1.6 to 1.07: warn and critical at once
    await hook.wait_for(lambda h: len(hook_alerts(h)) >= 1000, 30)
    feed.push(60000, at_s=10)  # all recover: 1000 resolved notices
    await hook.wait_for(lambda h: len(hook_alerts(h)) >= 2000, 30)
    await telegram.wait_for(lambda t: len(t.sent) >= 2, 30)
    await slack.wait_for(lambda s: sum(s.outcomes) >= 2, 30)
    assert await run.close() == 0

    states = Counter((a["account"], a["level"], a["state"]) for a in hook_alerts(hook))
    assert len(states) == 2000 and set(states.values()) == {1}  # each exactly once
    assert {lv for _, lv, _ in states} == {"critical"}  # critical inhibits warn on the same account
    assert len(hook.received) == 2 and len(telegram.sent) == 2 and slack.outcomes == [True, True]
    assert telegram.errors == []  # never a 429: our limiter kept within Telegram's limits
    gap = telegram.received[1].at - telegram.received[0].at
    assert gap >= 1.0
    assert telegram.sent[0]["text"].startswith("<b>1000 alerts: 1000 critical firing</b>")


class SlowStore(MemoryStore):
    """A store whose commits of one burst take together far longer than the channel's group_wait
    (a loaded machine)."""

    async def commit(self, c):
        await asyncio.sleep(0.02)
        return await super().commit(c)


async def test_a_burst_is_one_digest_however_slow_the_store(fakes) -> None:
    _, _, hook = fakes
    settings = settings_for(1000, [HOOK], {"group_wait_s": 0.1})
    feed = QueueFeed()
    run = Running(build_daemon(settings, default_registry(), store=SlowStore(), feeds=[feed]))
    feed.push(60000, 40000)  # 2000 alerts (warn and critical), decided in slices, each slice one slow commit
    await hook.wait_for(lambda h: len(hook_alerts(h)) >= 1000, 30)
    await eventually(lambda: run.d.alerts.pending() == 0)
    assert await run.close() == 0
    assert [len(r.json["alerts"]) for r in hook.received] == [1000]


async def test_restart_delivers_undelivered_alerts_exactly_once(fakes, tmp_path: Path) -> None:
    _, _, hook = fakes
    settings = settings_for(3, [HOOK], {"group_wait_s": 0.1}, tmp_path)
    path = tmp_path / "state.sqlite"
    hook.script.extend(["500"] * 10_000)  # the receiver is down during the first run

    store = SqliteStore(path)
    feed = QueueFeed()
    base_ms = feed.base_ms
    run = Running(build_daemon(settings, default_registry(), store=store, feeds=[feed]))
    feed.push(60000, 40000)
    await hook.wait_for(lambda h: len(h.received) >= 3)
    assert await run.close() == 0
    assert (await store.outbox_depth()) == {"hook": 3}
    await store.close()

    hook.script.clear()  # back up
    failed_posts = len(hook.received)
    for _ in range(2):  # a second restart must deliver nothing again
        store = SqliteStore(path)
        feed = QueueFeed(base_ms)
        run = Running(build_daemon(settings, default_registry(), store=store, feeds=[feed]))
        await run.d.alerts.ready.wait()
        feed.push(40000, 39000, at_s=60)  # still breached: the rules fire again after the restart
        await eventually(lambda: run.d.monitor.engine.price_of("BTC") == 39000)
        await eventually(lambda: run.d.alerts.pending() == 0)
        assert await run.close() == 0
        assert (await store.outbox_depth()) == {}
        await store.close()
    (delivered,) = hook.received[failed_posts:]  # one message, in the second run only
    assert sorted((a["account"], a["level"], a["state"], a["at"]) for a in delivered.json["alerts"]) == [
        (f"acct-000{i}", "critical", "firing", iso_ms(base_ms + 1000)) for i in range(3)]


async def test_hung_channel_delays_neither_ticks_nor_other_channels(fakes) -> None:
    slack, _, hook = fakes
    slack.script.extend([HANG] * 10)
    slack_cfg = {**SLACK, "timeout_s": 1.0}
    settings = settings_for(2, [slack_cfg, HOOK], {"group_wait_s": 0.1, "channel_failing_after_s": 1.5})
    feed = QueueFeed()
    d = build_daemon(settings, default_registry(), store=MemoryStore(), feeds=[feed])
    run = Running(d)
    feed.push(60000, 40000)
    await slack.wait_for(lambda s: len(s.hung) >= 1)  # Slack now holds our request
    hung_since = slack.received[0].at
    prices = [40000 - n for n in range(1, 201)]
    feed.push(*prices, at_s=5)
    await eventually(lambda: d.ticks_applied + d.inbox.coalesced == feed.pushed)
    after = [t for t in d.tick_times if t > hung_since]
    assert len(after) >= 1 and d.monitor.engine.price_of("BTC") == prices[-1]
    # The engine's own timestamps: ticks kept flowing while the channel hung (a 1 s timeout).
    assert max((b - a for a, b in zip(after, after[1:])), default=0.0) < 0.5
    # Meanwhile the webhook got the alerts, and then the report that Slack is failing.
    await hook.wait_for(lambda h: any("desk-slack is failing" in n["text"]
                                      for r in h.received for n in r.json["notices"]), 15)
    assert {a["account"] for a in hook_alerts(hook)} == {"acct-0000", "acct-0001"}
    assert await run.close() == 0


async def test_silence_from_cli_mutes_notifications_not_actions(fakes, tmp_path: Path) -> None:
    from monitor.alerts.commands import silence
    _, _, hook = fakes
    settings = settings_for(2, [HOOK], {"group_wait_s": 0.1, "silence_poll_s": 0.05}, tmp_path)
    out: list[str] = []
    assert await silence(settings, "acct-0000", None, "2h", "maintenance", False, None, out.append) == 0
    assert out[0].startswith("silence ") and "acct-0000/* muted until" in out[0]
    with pytest.raises(Exception, match="no account named 'nobody'"):
        await silence(settings, "nobody", None, "2h", "", False, None, out.append)
    store = SqliteStore(tmp_path / "state.sqlite")
    feed = QueueFeed()
    run = Running(build_daemon(settings, default_registry(), store=store, feeds=[feed]))
    feed.push(60000, 40000)
    await hook.wait_for(lambda h: len(hook_alerts(h)) >= 1)
    assert {a["account"] for a in hook_alerts(hook)} == {"acct-0001"}
    silence_id = out[0].split()[1].rstrip(":")
    listed: list[str] = []
    await silence(settings, None, None, None, "", True, None, listed.append)
    assert listed[0].startswith(f"{silence_id}  acct-0000/*  until ") and listed[0].endswith("# maintenance")
    await silence(settings, None, None, None, "", False, silence_id, listed.append)
    # Expired: the alert still firing goes out now.
    await hook.wait_for(lambda h: "acct-0000" in {a["account"] for a in hook_alerts(h)})
    assert await run.close() == 0
    await store.close()


async def test_telegram_control_from_allow_listed_chats_only(fakes) -> None:
    _, telegram, _ = fakes
    logs = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(logs))
    try:
        settings = settings_for(2, [telegram_cfg(telegram, control=True, allowed_chat_ids=["42"])])
        store = MemoryStore()
        feed = QueueFeed()
        run = Running(build_daemon(settings, default_registry(), store=store, feeds=[feed]))
        feed.push(60000)
        telegram.add_update(666, "/pause with a secret phrase")
        telegram.add_update(42, "/status")
        await telegram.wait_for(lambda t: any(m["chat_id"] == "42" for m in t.sent))
        telegram.add_update(42, "/pause maintenance window")
        await eventually(lambda: any("Trading paused" in m["text"] for m in telegram.sent))
        ks = await store.kill_switch()
        assert (ks.engaged, ks.reason, ks.by) == (True, "maintenance window", "telegram:42")
        telegram.add_update(42, "/silence acct-0001 warn 2h")
        await eventually(lambda: any(m["text"].startswith("Silenced acct-0001/warn") for m in telegram.sent))
        telegram.add_update(42, "/resume")
        await eventually(lambda: any(m["text"] == "Trading resumed." for m in telegram.sent))
        assert not (await store.kill_switch()).engaged
        assert [(s.account, s.level) for s in await store.silences()] == [("acct-0001", "warn")]
        assert await run.close() == 0
    finally:
        structlog.reset_defaults()
    status = next(m["text"] for m in telegram.sent if m["chat_id"] == "42")
    assert status.startswith("2 accounts") and "acct-0000: health 1.6000" in status
    assert all(m["chat_id"] != 666 for m in telegram.sent)
    assert "chat not allow-listed" in logs.getvalue() and "secret phrase" not in logs.getvalue()


async def test_heartbeat_pings_while_healthy(fakes, monkeypatch) -> None:
    _, _, hook = fakes
    monkeypatch.setenv("HEARTBEAT_URL", hook.url + "/ping/abc123")
    settings = settings_for(1, [{"name": "console"}], {"heartbeat_url_env": "HEARTBEAT_URL",
                                                       "heartbeat_every_s": 0.05})
    feed = QueueFeed()
    run = Running(build_daemon(settings, default_registry(), store=MemoryStore(), feeds=[feed]))
    feed.push(60000)
    await hook.wait_for(lambda h: sum(r.path == "/ping/abc123" for r in h.received) >= 3)
    assert await run.close() == 0


async def test_alert_that_cleared_while_stopped_is_resolved_after_restart(fakes, tmp_path: Path) -> None:
    _, _, hook = fakes
    settings = settings_for(2, [HOOK], {"group_wait_s": 0.05}, tmp_path)
    feed = QueueFeed()
    store = SqliteStore(tmp_path / "state.sqlite")
    run = Running(build_daemon(settings, default_registry(), store=store, feeds=[feed]))
    feed.push(60000, 40000)
    await hook.wait_for(lambda h: len(hook_alerts(h)) >= 2)
    assert await run.close() == 0
    await store.close()

    store = SqliteStore(tmp_path / "state.sqlite")
    feed2 = QueueFeed(feed.base_ms)
    run = Running(build_daemon(settings, default_registry(), store=store, feeds=[feed2]))
    feed2.push(61000, at_s=120)  # recovered while the daemon was down: the rules never see it fire
    await hook.wait_for(lambda h: len(hook_alerts(h)) >= 4)
    assert await run.close() == 0
    assert await store.alerts() == []
    await store.close()
    resolved = [a for a in hook_alerts(hook) if a["state"] == "resolved"]
    assert sorted((a["account"], a["level"], a["since"], a["min_health"]) for a in resolved) == [
        (f"acct-000{i}", "critical", iso_ms(feed.base_ms + 1000), pytest.approx(32000 / 30000)) for i in range(2)]
    assert resolved[0]["health"] == pytest.approx(61000 * 0.8 / 30000)


async def test_alerting_goes_on_from_memory_through_a_redis_outage(fakes, redis_server, tmp_path: Path) -> None:
    _, _, hook = fakes
    raw = settings_for(1, [HOOK], {"group_wait_s": 0.05}, tmp_path).model_dump(exclude_none=True)
    raw["store"] = {"backend": "redis", "url": redis_server.url, "prefix": "alerts-test"}
    settings = parse_settings(raw)
    feed = QueueFeed()
    run = Running(build_daemon(settings, default_registry(), feeds=[feed]))
    await run.d.alerts.ready.wait()
    feed.push(60000)
    await eventually(lambda: run.d.all_priced.is_set())
    redis_server.stop()
    feed.push(40000, at_s=1)  # fires while the store is down: delivered from memory

    def notices(h):
        return [n["text"] for r in h.received for n in r.json["notices"]]
    await hook.wait_for(lambda h: any(a["state"] == "firing" for a in hook_alerts(h))
                        and any(t.startswith("State store unavailable") for t in notices(h)), 20)
    redis_server.start()
    await hook.wait_for(lambda h: any(t.startswith("State store back") for t in notices(h)), 20)
    await eventually(lambda: run.d.store.buffered_writes == 0, 20)
    assert sorted((r.account, r.level) for r in await run.d.store.alerts()) == [("acct-0000", "critical"), ("acct-0000", "warn")]
    assert await run.d.store.outbox_depth() == {}  # the buffered add and done landed in order
    assert await run.close() == 0
