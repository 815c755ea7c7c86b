"""A service's Retry-After / retry_after is bounded, jittered and parsed in both RFC 9110 forms;
a channel parked on a long wait is still reported failing. Against the local fake services."""

from __future__ import annotations

import asyncio
import random
import tomllib
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from monitor.alerts.delivery import JITTER, ChannelWorker, DeliveryPolicy, retry_delay
from monitor.alerts.http import retry_after
from monitor.alerts.message import Message, item_payload
from monitor.alerts.notifiers import DeliveryError
from monitor.alerts.ratelimit import RateLimiter
from monitor.alerts.slack import SlackNotifier
from monitor.alerts.telegram import TelegramNotifier
from monitor.alerts.webhook import WebhookNotifier
from monitor.config import parse_settings
from monitor.errors import ConfigError
from monitor.store.base import OutboxItem
from monitor.store.sqlite import MemoryStore
from tests.fake_services import TELEGRAM_TOKEN, FakeSlack, FakeTelegram, FakeWebhook
from tests.test_notifiers import CHAT, T0, alert

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
POLICY = DeliveryPolicy(group_wait_s=0.0, retry_base_s=0.1, retry_max_s=0.4, failing_after_s=120.0,
                        retry_after_max_s=0.5)


# -- parsing ---------------------------------------------------------------------------------
def http_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, timezone.utc), usegmt=True)


@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("-5", -5.0), ("1.5", 1.5), (3, 3.0), (2.5, 2.5),
    (http_date(NOW + 90), 90.0),  # IMF-fixdate
    ("Tuesday, 14-Nov-23 22:13:50 GMT", 30.0),  # obsolete RFC 850 form, NOW + 30
    ("Tue Nov 14 22:13:50 2023", 30.0),  # asctime form (no zone: GMT)
    (http_date(NOW - 60), -60.0),  # already past: the worker waits its base delay
])
def test_retry_after_reads_seconds_and_http_dates(value, seconds) -> None:
    assert retry_after(value, now_s=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "1e3", "inf", "nan", "1" + "0" * 400, True,
                                   float("inf"), float("nan"), [5], {"s": 5}])
def test_unreadable_retry_after_is_ignored(value) -> None:
    assert retry_after(value, now_s=NOW) is None


# -- the bounds ------------------------------------------------------------------------------
@pytest.mark.parametrize("asked, lo, hi", [
    (0.0, 0.1, 0.1 * (1 + JITTER)),  # "retry now" still waits the base delay
    (-30.0, 0.1, 0.1 * (1 + JITTER)),
    (1_000_000.0, 0.5, 0.5),  # "a fortnight" waits the cap
    (0.3, 0.3, 0.3 * (1 + JITTER)),  # within the bounds: as asked, plus jitter
])
def test_asked_waits_are_clamped_between_base_and_cap(asked, lo, hi) -> None:
    for u in (0.0, 0.5, 0.999):
        assert lo <= retry_delay(POLICY, 1, asked, u) <= hi


def test_own_backoff_doubles_to_its_cap_with_seeded_jitter() -> None:
    a, b = random.Random(7), random.Random(7)
    waits = [retry_delay(POLICY, n, None, a.random()) for n in range(1, 6)]
    assert waits == [retry_delay(POLICY, n, None, b.random()) for n in range(1, 6)]  # deterministic
    assert 0.1 <= waits[0] <= 0.11 and 0.2 <= waits[1] <= 0.22 and waits[3:] == [0.4, 0.4]
    assert retry_delay(POLICY, 5000, None, 0.5) == 0.4  # no overflow after days of failures


def test_retry_after_max_is_finite_and_bounded() -> None:
    base = tomllib.loads((ROOT / "examples" / "offline.toml").read_text())
    assert parse_settings(base, "t").alerts.retry_after_max_s == 300.0
    for bad in (float("inf"), 86400.0, 0.5):  # infinite, over an hour, below retry_base_s (1)
        with pytest.raises(ConfigError, match="retry_after_max_s"):
            parse_settings({**base, "alerts": {"retry_after_max_s": bad}}, "t")


# -- against the fake services -----------------------------------------------------------------
@pytest.fixture
async def slack():
    server = await FakeSlack().start()
    yield server
    await server.stop()


@pytest.fixture
async def telegram():
    server = await FakeTelegram(chats=(CHAT,), enforce_limits=False).start()
    yield server
    await server.stop()


@pytest.fixture
async def hook():
    server = await FakeWebhook().start()
    yield server
    await server.stop()


class Reports:
    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.changed = asyncio.Event()

    def __call__(self, *report) -> None:
        self.seen.append(report)
        self.changed.set()

    async def wait_failing(self, timeout: float = 5.0) -> None:
        async def loop():
            while not any(r[1] is True for r in self.seen):
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)


async def started(notifier, policy: DeliveryPolicy, reports: Reports) -> tuple[ChannelWorker, asyncio.Task]:
    store = MemoryStore()
    worker = ChannelWorker(notifier, store, RateLimiter([]), policy, reports, rng=random.Random(1).random)
    item = OutboxItem(notifier.name, "k1", T0, item_payload(alert()))
    await store.outbox_add(item)
    worker.put(item)
    return worker, asyncio.create_task(worker.run())


async def stopped(task: asyncio.Task, notifier) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await notifier.close()


@pytest.mark.parametrize("told", ["0", "-3"])
async def test_retry_after_zero_or_negative_does_not_hammer(slack: FakeSlack, told: str) -> None:
    slack.default = ("429", told)  # every request answered "429, retry now"
    n, reports = SlackNotifier("s", slack.webhook_url), Reports()
    policy = DeliveryPolicy(group_wait_s=0.0, retry_base_s=0.1, retry_max_s=0.4, failing_after_s=0.5)
    _, task = await started(n, policy, reports)
    try:
        await reports.wait_failing()  # 0.5 s of failures, reported while the channel waits
        requests = len(slack.received)
    finally:
        await stopped(task, n)
    assert 2 <= requests <= 7  # at least the base delay between tries: not thousands a second
    assert reports.seen == [("s", True, "slack: HTTP 429 rate_limited")]


async def test_huge_retry_after_waits_the_cap_then_delivers(hook: FakeWebhook) -> None:
    hook.script.append(("429", "1000000"))  # 11.6 days
    n, reports = WebhookNotifier("w", hook.url + "/hook"), Reports()
    worker, task = await started(n, POLICY, reports)
    try:
        await asyncio.wait_for(worker.idle(), 5)  # retried after retry_after_max_s (0.5 s), not days
    finally:
        await stopped(task, n)
    assert len(hook.received) == 2 and reports.seen == []


async def test_a_channel_parked_on_retry_after_is_reported_failing_while_it_waits(telegram: FakeTelegram) -> None:
    telegram.script.append(("429", 1_000_000))  # {"ok": false, "error_code": 429, "parameters": {"retry_after": ...}}
    n, reports = TelegramNotifier("t", TELEGRAM_TOKEN, CHAT, telegram.url), Reports()
    policy = DeliveryPolicy(group_wait_s=0.0, retry_base_s=0.1, retry_max_s=0.4, failing_after_s=0.3,
                            retry_after_max_s=300.0)
    _, task = await started(n, policy, reports)
    try:
        await reports.wait_failing()  # at failing_after_s, not after the 300 s wait
        assert len(telegram.received) == 1  # still waiting out the retry_after
    finally:
        await stopped(task, n)
    assert reports.seen == [("t", True, "telegram: Too Many Requests: retry after 1000000")]


async def test_http_date_and_garbage_retry_after_reach_the_worker(hook: FakeWebhook) -> None:
    n = WebhookNotifier("w", hook.url + "/hook")
    hook.script.extend([("429", http_date(datetime.now(timezone.utc).timestamp() + 3600)), ("429", "soon"),
                        ("429", None)])
    errors = []
    for _ in range(3):
        with pytest.raises(DeliveryError) as e:
            await n.send(Message((alert(),)))
        errors.append(e.value.retry_after_s)
    await n.close()
    assert 3590 <= errors[0] <= 3600 and errors[1:] == [None, None]  # unreadable: our own backoff


async def test_garbage_telegram_retry_after_falls_back_to_backoff(telegram: FakeTelegram) -> None:
    telegram.script.extend([("429", "soon"), ("429", None)])
    n, reports = TelegramNotifier("t", TELEGRAM_TOKEN, CHAT, telegram.url), Reports()
    worker, task = await started(n, POLICY, reports)
    try:
        await asyncio.wait_for(worker.idle(), 5)
    finally:
        await stopped(task, n)
    assert len(telegram.received) == 3 and len(telegram.sent) == 1
