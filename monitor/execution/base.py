"""The Executor interface: turns a Plan into fills."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from monitor.model import Fill, Plan, Repay, Transfer


@dataclass(frozen=True, slots=True)
class Execution:
    plan_id: str
    fills: tuple[Fill, ...] = ()
    repays: tuple[Repay, ...] = ()
    duplicate: bool = False  # the plan id was executed before: nothing was done this time
    errors: tuple[str, ...] = field(default=())
    refused: str | None = None  # the trading gate said no (kill switch, not the leader): nothing was claimed
    transfers: tuple[Transfer, ...] = ()  # top-ups done (before any order of the plan)

    @property
    def did_something(self) -> bool:
        return bool(self.fills or self.repays or self.transfers)


class Executor(Protocol):
    name: str

    async def execute(self, plan: Plan) -> Execution: ...
