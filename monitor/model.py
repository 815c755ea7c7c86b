"""Domain types shared by every component.

All are immutable value objects; the risk engine keeps its own numpy arrays and
hands these out only at its edges (events, views, plans).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

Side = Literal["buy", "sell"]


def wall_clock_ms() -> int:
    """Now, in Unix milliseconds (event time for live feeds)."""
    return time.time_ns() // 1_000_000


def iso_ms(ts_ms: int | None) -> str | None:
    """Event time as ISO-8601 UTC with milliseconds; None stays None."""
    if ts_ms is None:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_number(x: Any) -> Any:
    """Strict JSON has no NaN or infinity: unknown is null, infinite (health without debt) "inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: json_number(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_number(v) for v in x]
    return x


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One price observation of a market symbol, in event time.

    `ts_ms` is the venue's timestamp (the receive time when the venue sends none);
    `recv_ms` is when our process received it (None for replayed and simulated prices).
    """

    symbol: str
    price: float
    ts_ms: int
    bid: float | None = None
    ask: float | None = None
    recv_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Order:
    """A market order on `symbol` (BASE/QUOTE): `amount` is in base units."""

    symbol: str
    side: Side
    amount: float
    price: float  # the price the planner expects to pay or receive (bid/ask, after slippage)
    base: str
    quote: str

    @property
    def notional(self) -> float:
        return self.amount * self.price


@dataclass(frozen=True, slots=True)
class Repay:
    """Repay `amount` of borrowed `asset` from the account's own balance of it."""

    asset: str
    amount: float


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move `amount` of `asset` into the account from the owner's reserve (a top-up: no trade,
    no market risk; on a venue, its transfer from the account's `reserve_wallet`)."""

    asset: str
    amount: float


@dataclass(frozen=True, slots=True)
class Fill:
    """What an executor did with one Order."""

    order: Order
    amount: float
    price: float
    fee: float  # in quote units
    ts_ms: int

    @property
    def notional(self) -> float:
        return self.amount * self.price


@dataclass(frozen=True, slots=True)
class Plan:
    """A strategy's answer for one account: what to trade, and the health it expects after."""

    account: str
    level: str
    strategy: str
    ts_ms: int
    health_before: float
    expected_health: float
    orders: tuple[Order, ...] = ()
    repays: tuple[Repay, ...] = ()
    note: str = ""
    transfers: tuple[Transfer, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.orders and not self.repays and not self.transfers

    @property
    def notional(self) -> float:
        return sum(o.notional for o in self.orders)

    @property
    def plan_id(self) -> str:
        """Deterministic id: a retried plan has the same id, so it never executes twice."""
        legs = ";".join(f"{o.symbol}:{o.side}:{o.amount:.12g}" for o in self.orders)
        legs += ";" + ";".join(f"repay:{r.asset}:{r.amount:.12g}" for r in self.repays)
        if self.transfers:  # only then: plans without transfers keep the ids they always had
            legs += ";" + ";".join(f"transfer:{t.asset}:{t.amount:.12g}" for t in self.transfers)
        raw = f"{self.account}|{self.level}|{self.strategy}|{self.ts_ms}|{legs}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


class EventKind(str, Enum):
    FIRING = "firing"  # a level is breached (confirmed)
    RESOLVED = "resolved"  # a previously firing level cleared (past its hysteresis band)
    STALE = "stale"  # prices too old: health unknown, no trading
    FRESH = "fresh"  # prices fresh again after a stale period
    INEFFECTIVE = "ineffective"  # a rebalance was due but the strategy cannot raise health
    CAPPED = "capped"  # a rebalance was due but a cooldown or daily cap holds it back
    VERIFY_FAILED = "verify_failed"  # after execution health did not improve as planned
    REJECTED = "rejected"  # an order or repay was refused (the venue's reason in detail), or only partly filled
    DRIFT = "drift"  # the venue's own risk figure disagrees with ours beyond the account's tolerance


@dataclass(frozen=True, slots=True)
class LevelEvent:
    """Something an operator should hear about; produced by rules, consumed by alerts."""

    account: str
    level: str
    kind: EventKind
    health: float
    native: float  # the model's own figure (HF, LTV, margin level, MM rate)
    ts_ms: int
    dry_run: bool = True
    detail: str = ""
    min_health: float | None = None  # for RESOLVED: how low it went while firing
    since_ms: int | None = None  # for RESOLVED: when it started firing
    stale_assets: tuple[str, ...] = field(default=())
