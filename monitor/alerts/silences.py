"""Silences: mute an account's notifications (one level or all) for a while; never its actions."""

from __future__ import annotations

import uuid

from monitor.errors import UserError
from monitor.store.base import Silence


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
