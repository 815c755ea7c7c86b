"""Reconnect reconciliation: orders whose outcome a disconnect hid are accounted for before
the account trades again.

At start, plans a crash left "claimed" are closed through JournaledExecutor.reconcile
(ExchangeExecutor.reconcile asks the venue by client-id prefix). Here, run by the
account's sync loop before its first sync and after every reconnect, the prefixes whose
outcome is still unknown are looked up; what they did is journaled and nothing is placed
again: the account's next sync shows the venue's balances and the engine plans on those.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from monitor.execution.base import Execution
from monitor.execution.exchange import ExchangeExecutor, fills_of
from monitor.execution.journaled import execution_record_fills
from monitor.store.base import StateStore

log = structlog.get_logger("reconcile")


async def reconcile_account(executor: ExchangeExecutor, store: StateStore, account: str,
                            clock_ms: Callable[[], int]) -> int:
    """Raises VenueError when the venue cannot be asked (the sync loop tries again)."""
    gw = executor.gateways[account]
    prefixes = sorted(executor.unresolved.get(account, set()))
    for prefix in prefixes:
        orders = await gw.accounted_orders(prefix)
        record = execution_record_fills(Execution("", fills_of(orders, clock_ms())))
        await store.journal("reconciled", account, clock_ms(), {"client_id_prefix": prefix, **record})
        executor.unresolved[account].discard(prefix)
        log.info("reconciled after reconnect", account=account, client_id_prefix=prefix, orders=len(orders),
                 filled=[f"{o.side} {o.filled:g} {o.symbol}" for o in orders if o.filled])
    executor.reconciled.add(account)
    return len(prefixes)
