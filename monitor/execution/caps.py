"""Global notional caps, across every account: per action and per UTC day.

Per-account caps (a level's max_notional, an account's max_notional_per_day) size the
plans in the rules; these are the operator's last line over all accounts together. A
plan over a cap is not sent and becomes a `rejected` alert naming the cap. Today's total
is read back from the journal on the first plan after a start, so a restart does not
reset it.
"""

from __future__ import annotations

from collections.abc import Callable

from monitor.execution.base import Execution, Executor
from monitor.model import Plan
from monitor.store.base import StateStore

DAY_MS = 86_400_000


class CappedExecutor:
    def __init__(self, inner: Executor, store: StateStore, clock_ms: Callable[[], int],
                 per_action: float | None, per_day: float | None):
        self.inner = inner
        self.name = inner.name
        self._store = store
        self._clock_ms = clock_ms
        self.per_action = per_action
        self.per_day = per_day
        self._day: int | None = None
        self.spent_today = 0.0

    def __getattr__(self, name: str):  # reconcile() and the like belong to the inner executor
        return getattr(self.inner, name)

    async def _roll(self) -> None:
        day = self._clock_ms() // DAY_MS
        if day == self._day:
            return
        entries = await self._store.read_journal(since_ms=day * DAY_MS)
        self.spent_today = sum(f["amount"] * f["price"] for e in entries if e.get("kind") in ("execution", "reconciled")
                               for f in e.get("fills", ()))
        self._day = day

    async def execute(self, plan: Plan) -> Execution:
        if self.per_action is not None and plan.notional > self.per_action:
            return Execution(plan.plan_id, errors=(f"not sent: {plan.notional:.2f} over the global cap per action "
                                                   f"(execution.max_notional_per_action = {self.per_action:g})",))
        if self.per_day is not None:
            await self._roll()
            if self.spent_today + plan.notional > self.per_day:
                return Execution(plan.plan_id, errors=(
                    f"not sent: {plan.notional:.2f} would bring today's total over the global daily cap "
                    f"({self.spent_today:.2f} traded, execution.max_notional_per_day = {self.per_day:g})",))
        execution = await self.inner.execute(plan)
        if self.per_day is not None:
            self.spent_today += sum(f.notional for f in execution.fills)
        return execution
