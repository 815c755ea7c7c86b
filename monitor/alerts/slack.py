"""Slack incoming webhook: readable blocks with a plain-text fallback.

The webhook answers 200 "ok"; 429 with Retry-After when rate limited; 400
"invalid_payload" and similar for a message it refuses; 403/404/410 when the
webhook is revoked or its channel archived (a channel problem: kept and retried).
"""

from __future__ import annotations

import orjson

from monitor.alerts.http import HttpPoster, status_error
from monitor.alerts.message import Message
from monitor.alerts.notifiers import DeliveryError
from monitor.alerts.render import DETAILED, SLACK, alert_block, fit, one_line, summary, title

HEADER_MAX = 150  # Slack's limit on a header block's text
SECTION_MAX = 3000  # and on a section's text


def slack_payload(message: Message) -> dict:
    alerts = message.alerts
    if len(alerts) == 1 and not message.notices:
        head = title(alerts[0])
    elif alerts:
        head = summary(message)
    else:
        head = "collateral-monitor" + (" test" if message.test else "")
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": _cut(head, HEADER_MAX)}}]
    for n in message.notices:
        blocks.append(_section(SLACK.escape(n.text)))
    for a in alerts[:DETAILED]:
        blocks.append(_section(alert_block(a, SLACK)))
    rest = [SLACK.escape(one_line(a)) for a in alerts[DETAILED:]]
    if rest:
        blocks.append(_section(fit(rest, SLACK, "\n")))
    text = head if not message.notices else SLACK.escape(message.notices[0].text)
    return {"text": SLACK.escape(_cut(text, SECTION_MAX)), "blocks": blocks}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SlackNotifier:
    def __init__(self, name: str, webhook_url: str, timeout_s: float = 10.0):
        self.name = name
        self._url = webhook_url
        self._http = HttpPoster(timeout_s)

    async def send(self, message: Message) -> None:
        reply = await self._http.post(self._url, orjson.dumps(slack_payload(message)))
        if reply.status == 200 and reply.body.strip() == "ok":
            return
        if reply.status == 200:
            raise DeliveryError(f"slack: unexpected reply {reply.body[:100]!r}")
        raise status_error(reply, "slack")

    async def close(self) -> None:
        await self._http.close()
