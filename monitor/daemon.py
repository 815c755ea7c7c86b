"""The running daemon's state, and the questions asked of it (is it live, which feeds tick).

`Daemon` is what every component shares: the wiring in monitor/service.py builds it, the
engine task owns its risk state, and the HTTP endpoint, alert extras and reload read it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.config import Settings
from monitor.core import Monitor
from monitor.execution.base import Execution
from monitor.execution.journaled import JournaledExecutor
from monitor.feeds.base import PriceFeed
from monitor.feeds.combine import SourceCombiner
from monitor.inbox import EngineInbox
from monitor.lease import LeaseKeeper
from monitor.model import Plan, wall_clock_ms
from monitor.persistence import SnapshotWriter
from monitor.sdnotify import SystemdNotifier
from monitor.store.base import StateStore
from monitor.supervisor import Component
from monitor.telemetry import LatencyHistogram, LoopLagProbe, TickRate

if TYPE_CHECKING:  # annotations only
    from monitor.accounts.synced import SyncApplier, SyncHandle
    from monitor.alerts.manager import AlertManager
    from monitor.exchange.gateway import ExchangeGateway
    from monitor.execution.exchange import ExchangeExecutor


@dataclass(frozen=True, slots=True)
class Executed:
    plan: Plan
    execution: Execution


@dataclass(frozen=True, slots=True)
class ClockTick:
    now_ms: int


@dataclass
class Daemon:
    settings: Settings
    monitor: Monitor
    inbox: EngineInbox
    alerts: AlertManager
    executor: JournaledExecutor
    store: StateStore
    snapshots: SnapshotWriter
    feeds: list[PriceFeed]
    plans: asyncio.Queue[Plan]
    clock_ms: Callable[[], int] = wall_clock_ms
    ticks_applied: int = 0
    notifier: SystemdNotifier = field(default_factory=SystemdNotifier)
    first_tick: asyncio.Event = field(default_factory=asyncio.Event)
    all_priced: asyncio.Event = field(default_factory=asyncio.Event)  # every account's health is known
    engine_seen: float = field(default_factory=time.monotonic)  # when the engine loop last handled a message
    feed_seen: dict[str, float] = field(default_factory=dict)  # feed name -> when it last sent a tick
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # state read from the store (warm start done)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set once a plan's outcome is applied
    not_executed: deque[Execution] = field(default_factory=lambda: deque(maxlen=100))  # refused, duplicate, failed
    combiner: SourceCombiner | None = None  # symbols several feeds watch: one price out of them
    owns_store: bool = True  # an injected store is closed by whoever made it
    gateways: dict[str, ExchangeGateway] = field(default_factory=dict)  # exchange-backed accounts
    exchange: ExchangeExecutor | None = None  # testnet/live: orders on the venues
    sync: SyncApplier | None = None
    sync_handles: dict[str, SyncHandle] = field(default_factory=dict)
    price_sources: dict[str, str] = field(default_factory=dict)  # symbol -> the feed that prices it
    tick_times: deque[float] = field(default_factory=lambda: deque(maxlen=4096))  # when recent ticks were applied
    extra: list[Component] = field(default_factory=list)  # optional components (heartbeat, telegram control)
    lease: LeaseKeeper | None = None  # with ha.enabled: only the lease holder trades
    executing: tuple[Plan, asyncio.Future] | None = None  # the plan at the executor now
    # Read at scrape time by the HTTP endpoint (monitor/http); updated cheaply where things happen.
    tick_latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # engine time per tick
    feed_rates: dict[str, TickRate] = field(default_factory=dict)  # feed name -> ticks per second
    feed_lag_ms: dict[str, int] = field(default_factory=dict)  # feed name -> receipt minus event time, last tick
    loop_lag: LoopLagProbe = field(default_factory=LoopLagProbe)
    events: Counter[str] = field(default_factory=Counter)  # level events emitted, by kind
    actions: Counter[str] = field(default_factory=Counter)  # plans by outcome: executed, failed
    recent_actions: deque[tuple[Executed, float | None]] = field(default_factory=lambda: deque(maxlen=20))  # health after
    changes: int = 0  # bumped whenever what the status page shows may have changed
    http: Any = None  # the HTTP endpoint (monitor.http.server.HttpEndpoint) when [http] is set
    _last_status_ms: int = 0
    _last_resync_ms: int = 0


def level_order(monitor: Monitor) -> dict[str, list[str]]:
    """Per account, its level names mildest first (the rules keep them by threshold, highest first)."""
    return {acc.name: [lv.name for lv in acc.levels] for acc in monitor.rules.accounts}


def status_line(d: Daemon) -> str:
    """One line for systemd's STATUS=: accounts, how many are blind, the worst health, feeds live."""
    health = d.monitor.engine.health
    known = [(h, i) for i, h in enumerate(health.tolist()) if not math.isnan(h)]
    worst = f", worst {d.monitor.engine.books[min(known)[1]].name} health {min(known)[0]:.3f}" if known else ""
    blind = blind_count(d)
    live = sum(feed_live(d, f.name) for f in d.feeds)
    return f"{len(health)} accounts{f', {blind} blind' if blind else ''}{worst}, feeds live {live}/{len(d.feeds)}"


def blind_count(d: Daemon) -> int:
    """Accounts whose health is unknown (stale, or an asset never priced): /healthz is 503 while any is."""
    return int(d.monitor.blind().sum())


def feed_live(d: Daemon, name: str) -> bool:
    stale_after = next((f.stale_after_s for f in d.settings.feeds if f.name == name), 30.0)
    return time.monotonic() - d.feed_seen.get(name, -math.inf) <= stale_after


def healthy(d: Daemon, within_s: float) -> bool:
    """The tick path is alive: the engine loop ran lately and some feed is live."""
    return time.monotonic() - d.engine_seen < within_s and any(feed_live(d, f.name) for f in d.feeds)
