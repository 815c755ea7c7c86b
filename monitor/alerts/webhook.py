"""Generic JSON webhook: a documented, versioned payload, optionally HMAC-signed.

Schema (version 1; fields are only ever added):
  {"version": 1, "id": "<stable per message>", "type": "alerts" | "notice" | "test",
   "sent_at": ISO-8601, "alerts": [ALERT, ...], "notices": [{"key", "text", "at"}]}
  ALERT = {"id" (stable per transition: drop duplicates by it), "account", "level", "state", "health", "native", "native_name", "model", "dry_run",
           "at", "since", "min_health", "repeat", "action", "detail", "price_source",
           "price_age_s", "exposures": [{"asset", "price", "liquidation_price",
           "distance_pct", "distance_sigma"}]}
With a secret, the header X-Collateral-Monitor-Signature is "sha256=" + the hex
HMAC-SHA256 of the raw body under the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict
from typing import Any

import orjson

from monitor.alerts.content import NATIVE_NAME, Alert, json_safe
from monitor.alerts.http import HttpPoster, status_error
from monitor.alerts.message import Message
from monitor.model import iso_ms, wall_clock_ms

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Collateral-Monitor-Signature"


def webhook_alert(a: Alert) -> dict[str, Any]:
    c = a.context
    return json_safe({
        "id": a.delivery_id, "account": a.account, "level": a.level, "state": a.state, "health": a.health, "native": a.native,
        "native_name": NATIVE_NAME.get(c.model, "health"), "model": c.model or None, "dry_run": a.dry_run,
        "at": iso_ms(a.ts_ms), "since": iso_ms(a.since_ms), "min_health": a.min_health, "repeat": a.repeat,
        "action": c.action, "detail": a.detail, "price_source": c.price_source, "price_age_s": c.price_age_s,
        "exposures": [asdict(e) for e in c.exposures],
    })


def webhook_payload(message: Message, sent_ms: int) -> dict[str, Any]:
    kind = "test" if message.test else ("alerts" if message.alerts else "notice")
    return {"version": SCHEMA_VERSION, "id": message.id, "type": kind, "sent_at": iso_ms(sent_ms),
            "alerts": [webhook_alert(a) for a in message.alerts],
            "notices": [{"key": n.key, "text": n.text, "at": iso_ms(n.ts_ms)} for n in message.notices]}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    def __init__(self, name: str, url: str, secret: str | None = None, timeout_s: float = 10.0,
                 clock_ms=wall_clock_ms):
        self.name = name
        self._url = url
        self._secret = secret
        self._clock_ms = clock_ms
        self._http = HttpPoster(timeout_s)

    async def send(self, message: Message) -> None:
        body = orjson.dumps(webhook_payload(message, self._clock_ms()))
        headers = {SIGNATURE_HEADER: sign(self._secret, body)} if self._secret else {}
        reply = await self._http.post(self._url, body, headers)
        if not 200 <= reply.status < 300:
            raise status_error(reply, "webhook")

    async def close(self) -> None:
        await self._http.close()
