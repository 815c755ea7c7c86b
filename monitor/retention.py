"""The journal's retention policy: entries older than `[store] journal_keep_days` are dropped,
at start and then hourly, so a long-running deployment's store does not grow without bound.

Trimming is idempotent, so every instance may run it; during a store outage it is skipped
(the next pass catches up). The daily caps read only today's entries: never affected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from monitor.store.base import StateStore, StoreUnavailable

log = structlog.get_logger("retention")
DAY_MS = 86_400_000
EVERY_S = 3600.0


async def trim_once(store: StateStore, keep_days: float, now_ms: int) -> int | None:
    """How many entries were dropped, or None when the store could not be reached."""
    try:
        removed = await store.trim_journal(now_ms - int(keep_days * DAY_MS))
    except StoreUnavailable as err:
        log.warning("journal retention skipped: store unavailable", error=str(err))
        return None
    if removed:
        log.info("journal entries past retention dropped", removed=removed, keep_days=keep_days)
    return removed


async def retention_loop(store: StateStore, keep_days: float, clock_ms: Callable[[], int],
                         every_s: float = EVERY_S) -> None:
    while True:
        await trim_once(store, keep_days, clock_ms())
        await asyncio.sleep(every_s)
