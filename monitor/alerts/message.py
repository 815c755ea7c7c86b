"""What a channel is handed: one message holding one or more alerts and notices.

Each alert or notice is an outbox item of its channel; a message groups the
items a channel had waiting (a digest), and is accepted or refused as a whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from monitor.alerts.content import Alert


@dataclass(frozen=True, slots=True)
class Notice:
    """A daemon-level notice (a channel failing, the store down, a test message)."""
    key: str
    text: str
    ts_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "text": self.text, "ts_ms": self.ts_ms}


@dataclass(frozen=True, slots=True)
class Message:
    alerts: tuple[Alert, ...] = ()
    notices: tuple[Notice, ...] = ()
    test: bool = False

    @property
    def id(self) -> str:
        """Deterministic: a re-sent message has the same id, so a receiver can drop the copy."""
        keys = [a.key for a in self.alerts] + [n.key for n in self.notices]
        return hashlib.sha256("\x1e".join(keys).encode()).hexdigest()[:24]

    @property
    def dry_run(self) -> bool:
        return any(a.dry_run for a in self.alerts)


def item_payload(x: Alert | Notice) -> dict[str, Any]:
    return {"alert": x.to_dict()} if isinstance(x, Alert) else {"notice": x.to_dict()}


def from_payload(payload: dict[str, Any]) -> Alert | Notice:
    if "alert" in payload:
        return Alert.from_dict(payload["alert"])
    n = payload["notice"]
    return Notice(n["key"], n["text"], n["ts_ms"])


def message_of(items: list[Alert | Notice], test: bool = False) -> Message:
    return Message(tuple(x for x in items if isinstance(x, Alert)), tuple(x for x in items if isinstance(x, Notice)),
                   test)
