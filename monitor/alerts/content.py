"""What an alert says: the event plus the account's context at the moment it happened.

The context (exposures, liquidation prices, price freshness, the action) is
read from the Monitor on the tick path, where the risk state lives; everything
after that (policy, rendering, delivery) works on these plain values, which
round-trip through JSON for the durable outbox.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from monitor.model import EventKind, LevelEvent

if TYPE_CHECKING:
    from monitor.core import Monitor

NATIVE_NAME = {"health_factor": "health factor", "ltv": "LTV", "margin_level": "margin level", "unified": "MM rate"}
PERCENT_NATIVE = frozenset({"ltv", "unified"})  # figures venues show as percentages
TOP_EXPOSURES = 3


@dataclass(frozen=True, slots=True)
class ExposureLine:
    asset: str
    price: float
    liquidation_price: float | None
    distance_pct: float | None
    distance_sigma: float | None


@dataclass(frozen=True, slots=True)
class AlertContext:
    model: str = ""
    action: str = ""  # what the daemon did or will do
    price_source: str = ""
    price_age_s: float | None = None  # age of the account's oldest price at the event
    exposures: tuple[ExposureLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification's worth about one account. Field names follow LevelEvent."""

    account: str
    level: str
    kind: EventKind
    health: float
    native: float
    ts_ms: int
    dry_run: bool = True
    detail: str = ""
    min_health: float | None = None
    since_ms: int | None = None
    context: AlertContext = field(default_factory=AlertContext)
    repeat: int = 0  # 0: the first notification of this firing; n: the n-th reminder
    stale_assets: tuple[str, ...] = ()  # a "blind" (stale) alert: the assets without a fresh price

    @classmethod
    def from_event(cls, ev: LevelEvent, context: AlertContext | None = None) -> Alert:
        return cls(ev.account, ev.level, ev.kind, ev.health, ev.native, ev.ts_ms, ev.dry_run, ev.detail,
                   ev.min_health, ev.since_ms, context or AlertContext(), stale_assets=ev.stale_assets)

    @property
    def state(self) -> str:
        return self.kind.value

    @property
    def key(self) -> str:
        """Deterministic: the same alert is the same outbox entry, before and after a restart. The end
        of a firing is named by when the firing began: resolved again after a restart (its first
        notice lost with the process), it is the same entry, never news."""
        ends = self.kind in (EventKind.RESOLVED, EventKind.FRESH) and self.since_ms is not None
        at = self.since_ms if ends else self.ts_ms
        return f"{self.account}\x1f{self.level}\x1f{self.kind.value}\x1f{at}\x1f{self.repeat}"

    @property
    def delivery_id(self) -> str:
        return delivery_id(self.key)

    def again(self, ts_ms: int, repeat: int) -> Alert:
        return replace(self, ts_ms=ts_ms, repeat=repeat)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        return json_safe(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        ctx = dict(d.get("context") or {})
        ctx["exposures"] = tuple(ExposureLine(**e) for e in ctx.get("exposures", ()))
        return cls(d["account"], d["level"], EventKind(d["kind"]), _nan(d["health"]), _nan(d["native"]), d["ts_ms"],
                   d["dry_run"], d.get("detail", ""), d.get("min_health"), d.get("since_ms"), AlertContext(**ctx),
                   d.get("repeat", 0), tuple(d.get("stale_assets", ())))


def delivery_id(key: str) -> str:
    """What a receiver drops duplicates by: the same for every delivery of one transition, from any
    process, before and after a restart (derived from the alert's key, never from a clock)."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def json_safe(x: Any) -> Any:
    """JSON has no NaN or infinity: unknown or infinite figures become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def describe(monitor: Monitor, ev: LevelEvent, sources: dict[str, str]) -> AlertContext:
    """The account's context for an event; `sources` maps a price symbol to where its prices come from."""
    i = monitor.engine.account_index.get(ev.account)
    if i is None:
        return AlertContext()
    st = monitor.status(i)
    exposures = sorted((e for e in st.exposures if e.liquidation_price is not None),
                       key=lambda e: abs(e.distance_pct or 0.0))[:TOP_EXPOSURES]
    lines = tuple(ExposureLine(e.asset, e.price, e.liquidation_price, e.distance_pct, e.distance_sigma)
                  for e in exposures)
    source, age = _freshness(monitor, i, sources)
    return AlertContext(st.model, _action(monitor, i, ev), source, age, lines)


def refreshed(monitor: Monitor, alert: Alert, sources: dict[str, str]) -> Alert:
    """A reminder with the account's figures now, not as they were when it first fired."""
    i = monitor.engine.account_index.get(alert.account)
    if i is None:
        return alert
    st = monitor.status(i)
    ev = LevelEvent(alert.account, alert.level, alert.kind, st.health, st.native, alert.ts_ms, alert.dry_run)
    return replace(alert, health=st.health, native=st.native, context=describe(monitor, ev, sources))


def _freshness(monitor: Monitor, i: int, sources: dict[str, str]) -> tuple[str, float | None]:
    e = monitor.engine
    names, oldest = set(), None
    for asset in e.books[i].exposures:
        k = e.asset_index[asset]
        if monitor.fixed[k]:
            continue
        symbol = monitor.settings.assets[asset].symbol
        names.add(sources.get(symbol, "feed"))
        ts = int(e.last_ts[k])
        if ts >= 0:
            oldest = ts if oldest is None else min(oldest, ts)
    age = None if oldest is None else max(0.0, (monitor.now_ms - oldest) / 1000)
    return ", ".join(sorted(names)), age


def _action(monitor: Monitor, i: int, ev: LevelEvent) -> str:
    dry = " (dry-run)" if ev.dry_run else ""
    if ev.kind == EventKind.STALE:
        return "no trading until prices are fresh"
    if ev.kind in (EventKind.INEFFECTIVE, EventKind.CAPPED, EventKind.VERIFY_FAILED):
        return "no further action until this changes" if ev.kind != EventKind.VERIFY_FAILED else f"executed{dry}; check it"
    if ev.kind == EventKind.REJECTED:  # the venue's reason is in the detail
        return "not executed as planned; planned again on fresh prices after the cooldown"
    if ev.kind == EventKind.DRIFT:
        return "check the weights and borrow_mmr against the venue before trusting actions"
    if ev.kind != EventKind.FIRING:
        return "none"
    lv = next((lv for lv in monitor.rules.accounts[i].levels if lv.name == ev.level), None)
    if lv is None or lv.action != "rebalance" or not monitor.act:
        return "alert only"
    return f"rebalance with {lv.strategy} toward health {lv.target:.4g}{dry}"
