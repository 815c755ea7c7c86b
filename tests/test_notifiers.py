"""Slack, Telegram and webhook notifiers against local servers that speak their wire formats."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
from dataclasses import replace

import pytest
import structlog

from monitor.alerts.content import Alert, AlertContext, ExposureLine, delivery_id
from monitor.alerts.delivery import ChannelWorker, DeliveryPolicy
from monitor.alerts.message import Message, Notice, item_payload
from monitor.alerts.notifiers import DeliveryError
from monitor.alerts.ratelimit import RateLimiter
from monitor.alerts.render import TELEGRAM_HTML, render
from monitor.alerts.slack import SlackNotifier
from monitor.alerts.telegram import TelegramNotifier
from monitor.alerts.webhook import SIGNATURE_HEADER, WebhookNotifier
from monitor.model import EventKind
from monitor.store.base import OutboxItem
from monitor.store.sqlite import MemoryStore
from tests.fake_services import (
    HANG,
    SLACK_PATH,
    TELEGRAM_TOKEN,
    FakeSlack,
    FakeTelegram,
    FakeWebhook,
    telegram_html_problem,
)

T0 = 1_700_000_000_000
CHAT = "-1001234567890"
CTX = AlertContext("ltv", "rebalance with repay_debt toward health 1.3 (dry-run)", "binance", 2.0,
                   (ExposureLine("BTC", 41000.0, 36000.5, -12.195, 2.345),))
NASTY = "desk <b>1</b> & *co_[x]"  # markup characters in a dynamic field


def alert(account: str = NASTY, level: str = "critical", kind: EventKind = EventKind.FIRING, **kw) -> Alert:
    return Alert(account, level, kind, 1.04, 0.8173, T0, True, context=CTX, **kw)


@pytest.fixture
async def slack():
    server = await FakeSlack().start()
    yield server
    await server.stop()


@pytest.fixture
async def telegram():
    server = await FakeTelegram(chats=(CHAT, "42")).start()
    yield server
    await server.stop()


@pytest.fixture
async def hook():
    server = await FakeWebhook().start()
    yield server
    await server.stop()


async def test_slack_payload_is_exact_and_escaped(slack: FakeSlack) -> None:
    n = SlackNotifier("desk-slack", slack.webhook_url)
    await n.send(Message((alert(),)))
    await n.close()
    title = "🔴 FIRING critical [dry-run]: desk <b>1</b> & *co_[x]"
    escaped = "🔴 FIRING critical [dry-run]: desk &lt;b&gt;1&lt;/b&gt; &amp; *co_[x]"
    assert slack.received[0].path == SLACK_PATH and slack.outcomes == [True]
    assert slack.received[0].json == {
        "text": escaped,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                f"*{escaped}*\nhealth: 1.0400 (LTV 81.73%)\n"
                "liquidation: BTC at 36,000.50 (-12.2%, 2.3σ daily), now 41,000.00\n"
                "action: rebalance with repay_debt toward health 1.3 (dry-run)\n"
                "prices: binance, 2s old\nat: 2023-11-14T22:13:20.000Z")}},
        ]}


async def test_slack_errors_are_classified(slack: FakeSlack) -> None:
    n = SlackNotifier("desk-slack", slack.webhook_url)
    slack.script.extend([("429", 7), "500", "404"])
    with pytest.raises(DeliveryError) as e429:
        await n.send(Message((alert(),)))
    with pytest.raises(DeliveryError) as e500:
        await n.send(Message((alert(),)))
    with pytest.raises(DeliveryError) as e404:
        await n.send(Message((alert(),)))
    await n.close()
    assert (e429.value.retry_after_s, e429.value.rejected) == (7.0, False)
    assert (e500.value.retry_after_s, e500.value.rejected) == (None, False)
    assert not e404.value.rejected  # a revoked webhook is the channel's problem: keep and retry
    assert "SECRET" not in e404.value.reason and "abcdef" not in e404.value.reason


async def test_slack_invalid_payload_is_refused_not_retried(slack: FakeSlack) -> None:
    class Broken(SlackNotifier):
        async def send(self, message: Message) -> None:  # unescaped markup: the fake refuses it
            reply = await self._http.post(self._url, b'{"text": "a <b> & c"}')
            from monitor.alerts.http import status_error
            if reply.status != 200:
                raise status_error(reply, "slack")
    n = Broken("s", slack.webhook_url)
    with pytest.raises(DeliveryError) as err:
        await n.send(Message((alert(),)))
    await n.close()
    assert err.value.rejected and "invalid_payload" in err.value.reason


async def test_telegram_body_is_exact_html_that_the_bot_api_parses(telegram: FakeTelegram) -> None:
    n = TelegramNotifier("ops-telegram", TELEGRAM_TOKEN, CHAT, telegram.url)
    await n.send(Message((alert(),)))
    await n.close()
    assert telegram.errors == []
    assert telegram.received[0].path == f"/bot{TELEGRAM_TOKEN}/sendMessage"
    assert telegram.sent == [{
        "chat_id": CHAT, "parse_mode": "HTML", "disable_web_page_preview": True,
        "text": ("<b>🔴 FIRING critical [dry-run]: desk &lt;b&gt;1&lt;/b&gt; &amp; *co_[x]</b>\n"
                 "health: 1.0400 (LTV 81.73%)\n"
                 "liquidation: BTC at 36,000.50 (-12.2%, 2.3σ daily), now 41,000.00\n"
                 "action: rebalance with repay_debt toward health 1.3 (dry-run)\n"
                 "prices: binance, 2s old\nat: 2023-11-14T22:13:20.000Z")}]


def test_fake_telegram_rejects_what_the_bot_api_rejects() -> None:
    assert telegram_html_problem("a < b")[0] is not None
    assert telegram_html_problem("fish & chips")[0] is not None
    assert telegram_html_problem("<b>x</i>")[0] is not None
    assert telegram_html_problem("<script>x</script>")[0] is not None
    assert telegram_html_problem("<b>a &lt; b &amp; c</b>") == (None, len("a < b & c"))


async def test_telegram_bad_entities_fall_back_to_plain_text(telegram: FakeTelegram) -> None:
    n = TelegramNotifier("t", TELEGRAM_TOKEN, CHAT, telegram.url)
    await n.send_text("<b>unclosed & raw", html=True, fallback="unclosed & raw")
    await n.close()
    assert telegram.errors[0][0] == 400 and "can't parse entities" in telegram.errors[0][1]
    assert telegram.sent == [{"chat_id": CHAT, "text": "unclosed & raw", "disable_web_page_preview": True}]


async def test_telegram_errors_carry_retry_after_and_never_the_token(telegram: FakeTelegram) -> None:
    n = TelegramNotifier("t", TELEGRAM_TOKEN, CHAT, telegram.url)
    telegram.script.extend([("429", 3), "500"])
    errs = []
    for _ in range(2):
        with pytest.raises(DeliveryError) as e:
            await n.send(Message((alert(),)))
        errs.append(e.value)
    wrong_chat = TelegramNotifier("t", TELEGRAM_TOKEN, "-100999", telegram.url)
    with pytest.raises(DeliveryError) as gone:
        await wrong_chat.send(Message((alert(),)))
    await n.close()
    await wrong_chat.close()
    assert errs[0].retry_after_s == 3.0 and not errs[1].rejected
    assert "chat not found" in gone.value.reason and not gone.value.rejected  # a channel problem: kept
    assert all(TELEGRAM_TOKEN not in e.reason for e in (*errs, gone.value))


async def test_digest_of_many_alerts_fits_one_telegram_message(telegram: FakeTelegram) -> None:
    alerts = tuple(alert(account=f"acct-{i:04d} <&>", level="warn" if i % 2 else "critical") for i in range(1000))
    text = render(Message(alerts), TELEGRAM_HTML)
    n = TelegramNotifier("t", TELEGRAM_TOKEN, CHAT, telegram.url)
    await n.send(Message(alerts))
    await n.close()
    assert telegram.errors == [] and len(telegram.sent) == 1
    assert text.startswith("<b>1000 alerts: 500 critical firing, 500 warn firing</b>")
    assert "more" in text.rsplit("\n", 1)[-1]


async def test_webhook_payload_is_versioned_and_signed(hook: FakeWebhook) -> None:
    n = WebhookNotifier("hook", hook.url + "/hook", secret="s3cret", clock_ms=lambda: T0 + 1000)
    message = Message((alert(kind=EventKind.RESOLVED, min_health=1.01, since_ms=T0 - 60_000),),
                      (Notice("k", "store down", T0),))
    await n.send(message)
    await n.close()
    got = hook.received[0]
    expected_sig = "sha256=" + hmac.new(b"s3cret", got.body, hashlib.sha256).hexdigest()
    assert got.headers[SIGNATURE_HEADER] == expected_sig
    body = got.json
    assert (body["version"], body["type"], body["id"], body["sent_at"]) == (
        1, "alerts", message.id, "2023-11-14T22:13:21.000Z")
    assert body["notices"] == [{"key": "k", "text": "store down", "at": "2023-11-14T22:13:20.000Z"}]
    (sent,) = message.alerts
    assert len(body["alerts"][0]["id"]) == 24 and body["alerts"][0]["id"] == delivery_id(sent.key)
    assert delivery_id(sent.key) != delivery_id(replace(sent, repeat=1).key)  # a reminder is news of its own
    assert body["alerts"] == [{
        "id": delivery_id(sent.key), "account": NASTY, "level": "critical", "state": "resolved", "health": 1.04, "native": 0.8173,
        "native_name": "LTV", "model": "ltv", "dry_run": True, "at": "2023-11-14T22:13:20.000Z",
        "since": "2023-11-14T22:12:20.000Z", "min_health": 1.01, "repeat": 0,
        "action": CTX.action, "detail": "", "price_source": "binance", "price_age_s": 2.0,
        "exposures": [{"asset": "BTC", "price": 41000.0, "liquidation_price": 36000.5, "distance_pct": -12.195,
                       "distance_sigma": 2.345}]}]


# -- the delivery worker: retries, Retry-After, reports ----------------------------------------------
def worker_for(notifier, store, reports, retry_base_s=0.05, failing_after_s=0.0) -> ChannelWorker:
    policy = DeliveryPolicy(group_wait_s=0.0, retry_base_s=retry_base_s, retry_max_s=0.2,
                            failing_after_s=failing_after_s)
    return ChannelWorker(notifier, store, RateLimiter([]), policy, lambda *r: reports.append(r))


async def run_until_idle(worker: ChannelWorker, items: list[OutboxItem], store) -> None:
    for item in items:
        assert await store.outbox_add(item)
        worker.put(item)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.idle(), 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_worker_honours_retry_after_then_delivers_and_clears_the_outbox(slack: FakeSlack) -> None:
    store, reports = MemoryStore(), []
    slack.script.extend([("429", 1), "500"])
    n = SlackNotifier("desk-slack", slack.webhook_url)
    item = OutboxItem("desk-slack", "k1", T0, item_payload(alert()))
    await run_until_idle(worker_for(n, store, reports), [item], store)
    await n.close()
    assert slack.outcomes == [False, False, True]
    assert slack.received[1].at - slack.received[0].at >= 1.0  # waited as Slack's Retry-After said
    assert await store.outbox_pending("desk-slack") == []
    assert [r[:2] for r in reports] == [("desk-slack", True), ("desk-slack", False)]  # failing, recovered


async def test_worker_retries_a_hung_request_after_its_timeout(telegram: FakeTelegram) -> None:
    store, reports = MemoryStore(), []
    telegram.script.append(HANG)
    n = TelegramNotifier("t", TELEGRAM_TOKEN, CHAT, telegram.url, timeout_s=0.3)
    await run_until_idle(worker_for(n, store, reports), [OutboxItem("t", "k", T0, item_payload(alert()))], store)
    await n.close()
    assert len(telegram.received) == 2 and len(telegram.sent) == 1


async def test_refused_message_is_reported_and_does_not_block_the_channel(slack: FakeSlack) -> None:
    store, reports = MemoryStore(), []

    class RefusingOnce:
        name = "x"
        calls = 0

        async def send(self, message):
            RefusingOnce.calls += 1
            if RefusingOnce.calls == 1:
                raise DeliveryError("slack: HTTP 400 invalid_payload", rejected=True)

    items = [OutboxItem("x", "a", T0, item_payload(alert()))]
    await run_until_idle(worker_for(RefusingOnce(), store, reports), items, store)
    assert reports == [("x", None, "slack: HTTP 400 invalid_payload")]
    assert await store.outbox_pending("x") == []


async def test_secrets_never_reach_the_logs(telegram: FakeTelegram, slack: FakeSlack) -> None:
    out = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
    try:
        store, reports = MemoryStore(), []
        telegram.script.extend(["500", ("429", 1)])
        slack.script.extend(["500", "404"])
        for n in (TelegramNotifier("t", TELEGRAM_TOKEN, CHAT, telegram.url),
                  SlackNotifier("s", slack.webhook_url)):
            await run_until_idle(worker_for(n, store, reports),
                                 [OutboxItem(n.name, "k", T0, item_payload(alert()))], store)
            await n.close()
    finally:
        structlog.reset_defaults()
    logs = out.getvalue()
    assert "alert delivery failed" in logs
    assert TELEGRAM_TOKEN not in logs and "SECRET" not in logs and SLACK_PATH not in logs


async def test_a_refused_digest_is_sent_one_alert_at_a_time(slack: FakeSlack) -> None:
    """A digest the channel refuses (too big, or one bad part) must not take its good alerts with it."""
    store, reports = MemoryStore(), []

    class RefusesDigestsAndOneBadAlert:
        name = "x"
        sent: list = []

        async def send(self, message):
            if len(message.alerts) > 1 or message.alerts[0].account == "bad":
                raise DeliveryError("slack: HTTP 400 invalid_blocks", rejected=True)
            self.sent.append(message.alerts[0].account)

    items = [OutboxItem("x", f"k{n}", T0, item_payload(alert(account=name)))
             for n, name in enumerate(["a", "bad", "c"])]
    await run_until_idle(worker_for(RefusesDigestsAndOneBadAlert(), store, reports), items, store)
    assert RefusesDigestsAndOneBadAlert.sent == ["a", "c"]
    assert reports == [("x", None, "slack: HTTP 400 invalid_blocks")]  # only the bad one is lost, and reported
    assert await store.outbox_pending("x") == []
