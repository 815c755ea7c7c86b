"""The StateStore interface: what must survive a restart, and be shared between instances.

Every backend (SQLite embedded, Redis in production) passes the same contract
tests (tests/test_store_contract.py). The daemon keeps its working state in
memory and writes through to the store; it reads the store back on start.

Records are plain dataclasses serialised with orjson, so a backend only stores
bytes under keys and never needs to know what is inside.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import orjson

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store cannot answer now (e.g. Redis is down) and the call cannot be buffered."""


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """The last known state of an account: a warm start begins from it."""
    account: str
    ts_ms: int
    health: float | None
    level: str | None
    book: dict[str, Any]          # asset -> exposure (held, borrowed, perpetuals) as the daemon last knew it
    config_digest: str = ""       # of the account's holdings in the config: an edited config wins
    rules: dict[str, Any] = field(default_factory=dict)  # cooldown and daily caps: a restart must not reset them
    reserve: dict[str, float] = field(default_factory=dict)  # what is left to top up from (paper ledger)
    native: float | None = None  # the model's own figure (MM rate, margin level, ...) as health had it
    residual: dict[str, float] = field(default_factory=dict)  # calibrated to the venue: num/den (USD) it added


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An active (firing) alert and when it was last notified."""
    account: str
    level: str
    since_ms: int
    last_sent_ms: int | None = None
    worst_health: float | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A notification not yet accepted by its channel. `key` makes adding it idempotent."""
    channel: str
    key: str
    ts_ms: int
    payload: dict[str, Any]
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes notifications (never actions) for an account, one level or all, until `until_ms`."""
    id: str
    account: str
    level: str | None
    until_ms: int
    created_ms: int
    comment: str = ""

    def matches(self, account: str, level: str, now_ms: int) -> bool:
        return (now_ms < self.until_ms and self.account in (account, "*")
                and (self.level is None or self.level == level))


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """While engaged, no order is placed; monitoring and alerting go on."""
    engaged: bool
    ts_ms: int
    reason: str = ""
    by: str = ""


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """An order idempotency key: a plan claimed for execution and what became of it."""
    plan_id: str
    account: str
    ts_ms: int
    state: str = "claimed"        # claimed | done | failed | abandoned
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lease:
    """Who may trade: the holder of the lease, and the fencing token of its tenure."""
    name: str
    holder: str
    token: int
    expires_ms: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    kind: str
    account: str
    ts_ms: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Commit:
    """Writes that land together or not at all: a transition and its consequence.

    An alert's state change with its notifications; a plan's journal entry with its closed
    claim, the account's book and its cooldown. A kill -9 lands before or after a commit,
    never inside one. `id` makes a commit applied twice (a retry after a lost reply) count once.
    """
    alerts: tuple[AlertRecord, ...] = ()
    alerts_deleted: tuple[tuple[str, str], ...] = ()  # (account, level)
    outbox: tuple[OutboxItem, ...] = ()
    journal: tuple[JournalEntry, ...] = ()
    plans_finished: tuple[tuple[str, str, dict[str, Any]], ...] = ()  # (plan_id, state, detail)
    snapshots: tuple[AccountSnapshot, ...] = ()
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.alerts_deleted or self.outbox or self.journal or self.plans_finished
                    or self.snapshots)


def dump(record: Any) -> bytes:
    return orjson.dumps(asdict(record) if hasattr(record, "__dataclass_fields__") else record)


def load(cls: type[T], raw: bytes | str) -> T:
    return cls(**orjson.loads(raw))


class StateStore(Protocol):
    """All methods are coroutines; a write returns once it is durable (or, on Redis during an
    outage, buffered in order for the flush: see monitor/store/redis.py)."""

    name: str

    # -- transitions ------------------------------------------------------------------------
    async def commit(self, c: Commit) -> list[bool]:
        """Applies every write of `c` atomically. Returns, per outbox item, whether it was new
        (False: in the outbox already, or delivered)."""

    # -- order idempotency ----------------------------------------------------------------
    async def claim_plan(self, plan_id: str, account: str, ts_ms: int) -> bool:
        """Records the key; False when it was claimed before: never execute a plan twice."""

    async def finish_plan(self, plan_id: str, state: str, detail: dict[str, Any] | None = None) -> None: ...

    async def open_plans(self) -> list[PlanRecord]:
        """Plans claimed but never finished (a crash mid-plan): reconcile before planning anew."""

    # -- the append-only action and fill journal ------------------------------------------
    async def journal(self, kind: str, account: str, ts_ms: int, record: dict[str, Any]) -> None: ...

    async def read_journal(self, account: str | None = None, since_ms: int | None = None,
                           limit: int | None = None) -> list[dict[str, Any]]:
        """Oldest first; with `limit`, the newest `limit` entries."""

    async def trim_journal(self, before_ms: int) -> int:
        """Drops entries recorded before `before_ms` (the retention policy); returns how many."""

    # -- account snapshots -----------------------------------------------------------------
    async def put_snapshot(self, snap: AccountSnapshot) -> None: ...
    async def put_snapshots(self, snaps: list[AccountSnapshot]) -> None:
        """Many at once: one transaction (SQLite) or one round trip (Redis)."""

    async def snapshots(self) -> dict[str, AccountSnapshot]: ...
    async def delete_snapshot(self, account: str) -> None: ...

    # -- active alerts ---------------------------------------------------------------------
    async def put_alert(self, alert: AlertRecord) -> None: ...
    async def delete_alert(self, account: str, level: str) -> None: ...
    async def alerts(self) -> list[AlertRecord]: ...

    # -- the notification outbox (per channel, oldest first) -------------------------------
    async def outbox_add(self, item: OutboxItem) -> bool:
        """False if (channel, key) is already in the outbox or was delivered: exactly once."""

    async def outbox_pending(self, channel: str, limit: int = 100) -> list[OutboxItem]: ...
    async def outbox_done(self, channel: str, key: str) -> None: ...
    async def outbox_retry(self, channel: str, key: str) -> None:
        """Counts a failed attempt on an item (it stays in the outbox)."""

    async def outbox_depth(self) -> dict[str, int]: ...

    # -- silences -------------------------------------------------------------------------
    async def put_silence(self, silence: Silence) -> None: ...
    async def delete_silence(self, silence_id: str) -> bool: ...
    async def silences(self, now_ms: int | None = None) -> list[Silence]:
        """With `now_ms`, only those still in force."""

    # -- kill switch ----------------------------------------------------------------------
    async def set_kill_switch(self, ks: KillSwitch) -> None: ...
    async def kill_switch(self) -> KillSwitch | None: ...

    # -- the trading lease (one leader among instances) ------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl_ms: int) -> Lease | None:
        """Takes or renews the lease; None when another holder's lease is in force. A new
        tenure gets a fencing token greater than every earlier one."""

    async def release_lease(self, name: str, holder: str) -> None: ...
    async def check_fence(self, name: str, token: int) -> bool:
        """True only while `token` is the token of the lease in force: checked right before an order."""

    async def lease(self, name: str) -> Lease | None: ...

    async def close(self) -> None: ...
