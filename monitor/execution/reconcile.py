"""Reconnect reconciliation: orders and top-ups whose outcome a disconnect hid are accounted
for before the account trades again.

At start, plans a crash left "claimed" are closed through JournaledExecutor.reconcile
(ExchangeExecutor.reconcile asks the venue). Here, run by the account's sync loop before
its first sync and after every reconnect, the plans whose outcome is still unknown are
looked up (top-ups by transfer id, orders by client-id prefix); what they did is journaled
and nothing is placed again: the account's next sync shows the venue's balances and the
engine plans on those.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from monitor.execution.exchange import ExchangeExecutor, client_prefix
from monitor.execution.journaled import execution_record_fills, legs_text
from monitor.store.base import StateStore

log = structlog.get_logger("reconcile")


async def reconcile_account(executor: ExchangeExecutor, store: StateStore, account: str,
                            clock_ms: Callable[[], int]) -> int:
    """Raises VenueError when the venue cannot be asked (the sync loop tries again)."""
    gw = executor.gateways[account]
    unresolved = executor.unresolved.get(account, {})
    plan_ids = sorted(unresolved)
    for plan_id in plan_ids:
        found = await executor.venue_outcome(gw, plan_id, unresolved[plan_id])
        record = execution_record_fills(found)
        await store.journal("reconciled", account, clock_ms(),
                            {"plan_id": plan_id, "client_id_prefix": client_prefix(plan_id), **record})
        del unresolved[plan_id]
        log.info("reconciled after reconnect", account=account, plan_id=plan_id, legs=legs_text(**{
            k: v for k, v in record.items() if k != "errors"}))
    executor.reconciled.add(account)
    return len(plan_ids)
