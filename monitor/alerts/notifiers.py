"""Notifiers: where alerts go. Each delivers a Message or raises DeliveryError.

HTTP notifiers (Slack, Telegram, webhook) live in their own modules; this one
holds the protocol, the error type and the console notifier (the embedded default).
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

from monitor.alerts.content import Alert
from monitor.alerts.message import Message
from monitor.alerts.render import PLAIN, facts, render


class DeliveryError(Exception):
    """A channel did not accept a message. The text never holds a secret (no URL, no token).

    `rejected`: the service refused this message itself (a retry cannot help);
    otherwise the failure is transient or the channel's, and the message is retried.
    `retry_after_s`: the wait the service asked for, unbounded; the delivery worker clamps it.
    """

    def __init__(self, reason: str, retry_after_s: float | None = None, rejected: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.rejected = rejected


class Notifier(Protocol):
    name: str

    async def send(self, message: Message) -> None:
        """Delivers one message; raises DeliveryError (or any error) on failure: the worker retries."""


def console_line(alert: Alert) -> str:
    dry = " [dry-run]" if alert.dry_run else ""
    again = f" (reminder {alert.repeat})" if alert.repeat else ""
    body = "; ".join(f"{label} {value}" for label, value in facts(alert))
    return f"{alert.kind.value.upper()}{dry} {alert.account}/{alert.level}{again}: {body}"


class ConsoleNotifier:
    def __init__(self, name: str = "console", stream: TextIO | None = None):
        self.name = name
        self._stream = stream

    async def send(self, message: Message) -> None:
        stream = self._stream or sys.stdout
        if message.notices:
            stream.write(render(Message(notices=message.notices, test=message.test), PLAIN) + "\n")
        for alert in message.alerts:
            stream.write(console_line(alert) + "\n")
        stream.flush()

    async def close(self) -> None:
        return None
