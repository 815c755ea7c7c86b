"""The path every plan takes to an executor, whichever it is (paper, testnet, live).

1. The trading gate (kill switch, leadership) may refuse: nothing is claimed, so the
   instance that may trade can still execute the same plan id.
2. The plan id is claimed in the store: a plan retried, or planned again after a
   restart, is never executed twice.
3. The outcome (`outcome()`: the journal entry and the closed claim) is committed by the
   engine's side together with the account's book and cooldown after the fills, so a kill -9
   can never leave a journaled fill on a ledger that does not show it. A claim left open
   means a crash mid-plan: the daemon reconciles it at start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from monitor.execution.base import Execution, Executor
from monitor.model import Plan
from monitor.store.base import AccountSnapshot, Commit, JournalEntry, PlanRecord, StateStore, StoreUnavailable

Gate = Callable[[Plan], Awaitable[str | None]]  # the reason trading is refused, or None


class JournaledExecutor:
    def __init__(self, inner: Executor, store: StateStore, clock_ms: Callable[[], int], gate: Gate | None = None):
        self.inner = inner
        self.name = inner.name
        self._store = store
        self._clock_ms = clock_ms
        self._gate = gate

    async def execute(self, plan: Plan) -> Execution:
        if self._gate is not None and (reason := await self._gate(plan)) is not None:
            return Execution(plan.plan_id, refused=reason)
        try:
            claimed = await self._store.claim_plan(plan.plan_id, plan.account, plan.ts_ms)
        except StoreUnavailable as err:  # no order without its idempotency key
            return Execution(plan.plan_id, refused=str(err))
        if not claimed:
            return Execution(plan.plan_id, duplicate=True)
        try:
            execution = await self.inner.execute(plan)
        except BaseException as err:
            await self._store.finish_plan(plan.plan_id, "failed", {"error": type(err).__name__})
            raise
        return execution

    def outcome(self, plan: Plan, execution: Execution, snapshots: tuple[AccountSnapshot, ...] = ()) -> Commit:
        """What an executed plan leaves in the store, as one commit: its journal entry, its closed
        claim and (`snapshots`) the account's book and rules state after it."""
        entry = JournalEntry("execution", plan.account, self._clock_ms(), execution_record(plan, execution))
        return Commit(journal=(entry,), plans_finished=((plan.plan_id, "failed" if execution.errors else "done", {}),),
                      snapshots=snapshots)

    async def reconcile(self, record: PlanRecord) -> str:
        """Closes a plan a crash left open. An executor that talks to a venue asks it what
        happened (`reconcile(record)` on the executor, by client order id); the journal says
        whether the outcome was recorded; otherwise nothing reached a venue: abandoned."""
        journaled = any(e.get("plan_id") == record.plan_id
                        for e in await self._store.read_journal(record.account, since_ms=record.ts_ms))
        state = "done" if journaled else "abandoned"
        detail: dict = {"reconciled": True}
        venue = getattr(self.inner, "reconcile", None)
        if venue is not None and not journaled:
            execution = await venue(record)
            if execution is not None and execution.did_something:
                await self._store.journal("reconciled", record.account, self._clock_ms(),
                                          {"plan_id": record.plan_id, **execution_record_fills(execution)})
                state = "done"
        await self._store.finish_plan(record.plan_id, state, detail)
        return state


def execution_record(plan: Plan, execution: Execution) -> dict:
    return {
        "plan_id": plan.plan_id, "level": plan.level, "strategy": plan.strategy,
        "health_before": plan.health_before, "expected_health": plan.expected_health,
        **execution_record_fills(execution),
    }


def execution_record_fills(execution: Execution) -> dict:
    return {
        "fills": [{"symbol": f.order.symbol, "side": f.order.side, "amount": f.amount, "price": f.price, "fee": f.fee}
                  for f in execution.fills],
        "repays": [{"asset": r.asset, "amount": r.amount} for r in execution.repays],
        "transfers": [{"asset": t.asset, "amount": t.amount} for t in execution.transfers],
        "errors": list(execution.errors),
    }


def legs_text(fills: list[dict], repays: list[dict] = (), transfers: list[dict] = (), digits: int = 8) -> list[str]:
    """One phrase per leg of a journaled execution (the record shapes of execution_record_fills)."""
    return ([f"top up {t['amount']:.{digits}g} {t['asset']}" for t in transfers]
            + [f"{f['side']} {f['amount']:.{digits}g} {f['symbol']} @ {f['price']:.{digits}g}" for f in fills]
            + [f"repay {r['amount']:.{digits}g} {r['asset']}" for r in repays])
