"""The StateStore interface: what must survive a restart."""

from __future__ import annotations

from typing import Any, Protocol


class StateStore(Protocol):
    def claim_plan(self, plan_id: str, account: str, ts_ms: int) -> bool:
        """Records an order idempotency key; False if it was claimed before (never execute twice)."""

    def journal(self, kind: str, account: str, record: dict[str, Any]) -> None:
        """Appends to the action and fill journal."""

    def read_journal(self, account: str | None = None) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class MemoryStore:
    """A store that forgets on exit: replay and tests."""

    def __init__(self) -> None:
        self._plans: set[str] = set()
        self._journal: list[dict[str, Any]] = []

    def claim_plan(self, plan_id: str, account: str, ts_ms: int) -> bool:
        if plan_id in self._plans:
            return False
        self._plans.add(plan_id)
        return True

    def journal(self, kind: str, account: str, record: dict[str, Any]) -> None:
        self._journal.append({"kind": kind, "account": account, **record})

    def read_journal(self, account: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self._journal if account is None or r["account"] == account]

    def close(self) -> None:
        pass
