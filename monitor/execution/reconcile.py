"""Reconciliation: before an account plans anything new, its earlier orders are accounted for.

At start, plans left "claimed" in the store (a crash mid-plan) and, after a reconnect,
orders whose outcome was unknown are looked up at the venue by their client-id prefix.
Whatever they did is journaled and the claim closed; nothing is placed again (the
account's next sync shows the venue's balances, and the engine plans on those).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from monitor.exchange.gateway import ExchangeGateway, VenueOrder
from monitor.execution.exchange import ExchangeExecutor, client_prefix
from monitor.store.base import StateStore

log = structlog.get_logger("reconcile")


def order_record(o: VenueOrder) -> dict:
    return {"client_id": o.client_id, "symbol": o.symbol, "side": o.side, "amount": o.amount,
            "filled": o.filled, "average": o.average, "fee": o.fee, "status": o.status}


async def reconcile_account(executor: ExchangeExecutor, store: StateStore, account: str,
                            clock_ms: Callable[[], int]) -> list[VenueOrder]:
    """Raises VenueUnavailable when the venue cannot be asked (try again after reconnecting)."""
    gw: ExchangeGateway = executor.gateways[account]
    open_plans = [p for p in await store.open_plans() if p.account == account]
    prefixes = {client_prefix(p.plan_id): p.plan_id for p in open_plans}
    for prefix in executor.unresolved.get(account, set()):
        prefixes.setdefault(prefix, "")
    found: list[VenueOrder] = []
    for prefix, plan_id in sorted(prefixes.items()):
        orders = await gw.orders_with_prefix(prefix)
        for o in orders:
            if not o.final:  # a resting remainder would fill on stale terms: cancel it, re-plan instead
                await gw.cancel(o)
        found += orders
        record = {"plan_id": plan_id, "prefix": prefix, "orders": [order_record(o) for o in orders]}
        await store.journal("reconciled", account, clock_ms(), record)
        if plan_id:
            state = "done" if any(o.filled > 0 for o in orders) else "abandoned"
            await store.finish_plan(plan_id, state, {"reconciled": True, "orders": len(orders)})
        log.info("reconciled", account=account, plan_id=plan_id or None, orders=len(orders),
                 filled=[f"{o.side} {o.filled:g} {o.symbol}" for o in orders if o.filled])
    executor.unresolved.pop(account, None)
    executor.reconciled.add(account)
    return found
