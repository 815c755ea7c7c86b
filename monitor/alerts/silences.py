"""Silences: mute an account's notifications (one level or all) for a while; never its actions."""

from __future__ import annotations

import re
import uuid

from monitor.errors import UserError
from monitor.store.base import Silence

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration_ms(text: str) -> int:
    """'90s', '30m', '2h', '1d', '1w' -> milliseconds."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"--for: not a duration like 30m, 2h or 1d: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)] * 1000)


def new_silence(account: str, level: str | None, for_ms: int, now_ms: int, comment: str = "") -> Silence:
    return Silence(uuid.uuid4().hex[:8], account, level, now_ms + for_ms, now_ms, comment)


def check_target(account: str, level: str | None, levels_of: dict[str, list[str]]) -> None:
    """The account exists (or is "*") and has the level (or "stale"): a typo must not silence nothing."""
    if account != "*" and account not in levels_of:
        raise UserError(f"silence: no account named {account!r}")
    if level is None or level == "stale":
        return
    known = {lv for lvs in levels_of.values() for lv in lvs} if account == "*" else set(levels_of[account])
    if level not in known:
        raise UserError(f"silence: {account} has no level named {level!r}")
