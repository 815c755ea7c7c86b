"""Builds the daemon from settings: feeds, store, executor, alerting, HTTP, exchange accounts.

Every dependency may be injected instead (tests, tools); by default it comes from the
settings. monitor/service.py runs what this builds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from monitor.accounts.synced import SyncApplier, SyncHandle
from monitor.alerts.build import Routed, build_alert_manager
from monitor.alerts.content import refreshed
from monitor.alerts.extras import control_components, heartbeat_component
from monitor.alerts.manager import AlertManager
from monitor.config import FeedSettings, Settings
from monitor.core import Monitor
from monitor.daemon import Daemon, level_order
from monitor.errors import ConfigError
from monitor.exchange.credentials import load_credentials
from monitor.exchange.gateway import ExchangeGateway
from monitor.exchange.open import open_gateway
from monitor.execution.base import Executor
from monitor.execution.caps import CappedExecutor
from monitor.execution.exchange import ExchangeExecutor
from monitor.execution.gate import TradingGate
from monitor.execution.journaled import JournaledExecutor
from monitor.execution.modes import check_mode
from monitor.execution.paper import PaperExecutor
from monitor.feeds.base import PriceFeed
from monitor.feeds.combine import build_combiner
from monitor.feeds.simulated import MarketSpec, SimulatedFeed
from monitor.http.server import HttpEndpoint, bearer_token
from monitor.inbox import EngineInbox
from monitor.lease import LeaseKeeper, default_instance_id
from monitor.model import wall_clock_ms
from monitor.persistence import SnapshotWriter
from monitor.sdnotify import SystemdNotifier
from monitor.store import open_store, state_dir
from monitor.store.base import StateStore
from monitor.supervisor import Component
from strategies.base import StrategyRegistry


def build_feed(fs: FeedSettings, settings: Settings) -> PriceFeed:
    if fs.driver != "simulated":
        from monitor.feeds.live import build_live_feed  # ccxt takes a second to import; offline runs skip it
        return build_live_feed(fs)
    sim = fs.simulated
    missing = [s for s in fs.symbols if s not in sim.start and s not in sim.fixed]
    if missing:
        raise ConfigError(f"feeds ({fs.name}).simulated.start: no start price for {missing[0]!r}")
    start = {s: sim.start[s] for s in fs.symbols if s in sim.start}
    fixed = {s: sim.fixed[s] for s in fs.symbols if s in sim.fixed}
    spec = MarketSpec(start=start, fixed=fixed, correlation=sim.correlation, seed=sim.seed, step_ms=sim.step_ms, vol_per_step=sim.vol_per_step,
                      jump_prob=sim.jump_prob, jump_scale=sim.jump_scale, crash_at_step=sim.crash_at_step,
                      crash_depth=sim.crash_depth, crash_steps=sim.crash_steps, recover_steps=sim.recover_steps)
    clock = market_clock(wall_clock_ms(), sim.step_ms) if sim.clock == "market" else None
    return SimulatedFeed(fs.name, spec, sim.interval_s, sim.max_steps, clock)


def market_clock(start_ms: int, step_ms: int) -> Callable[[], int]:
    """Event time that advances one step per call (a simulated market played faster than real time)."""
    steps = itertools.count()
    return lambda: start_ms + next(steps) * step_ms


def build_gateways(settings: Settings) -> dict[str, ExchangeGateway]:
    """One gateway per exchange-backed account (credentials read now: a missing one is a ConfigError)."""
    timeout = settings.execution.order_timeout_s
    symbols = tuple(sorted({a.symbol for a in settings.assets.values() if a.symbol and a.tradable}))
    return {a.name: open_gateway(a, load_credentials(a), timeout, symbols)
            for a in settings.accounts if a.source != "config"}


def build_executor(settings: Settings, monitor: Monitor, store: StateStore, clock_ms: Callable[[], int],
                   lease: LeaseKeeper | None, exchange: ExchangeExecutor | None = None,
                   loaded: asyncio.Event | None = None) -> JournaledExecutor:
    """Every plan's path: the trading gate, the journal, the global caps, then the venue's orders
    (`exchange`, testnet/live) or the paper ledger (priced by `monitor`)."""
    paper = PaperExecutor(monitor.quote, settings.execution.fee_rate, settings.execution.slippage, clock_ms)
    inner: Executor = paper
    if exchange is not None:
        # The limit price is the paper fill price: bid/ask with the slippage cap, in quote units.
        exchange.bind(paper, lambda plan: monitor.plan_still_helps(plan, paper.fill_price), paper.fill_price)
        inner = exchange
    ex = settings.execution
    if ex.max_notional_per_action is not None or ex.max_notional_per_day is not None:
        inner = CappedExecutor(inner, store, clock_ms, ex.max_notional_per_action, ex.max_notional_per_day)
    gate = TradingGate(store, state_dir(settings), settings.execution.kill_switch, lease,
                       trade_without_store=settings.store.trade_during_outage,
                       loaded=loaded.is_set if loaded is not None else lambda: True)
    return JournaledExecutor(inner, store, clock_ms, gate)


def build_daemon(settings: Settings, registry: StrategyRegistry, *, store: StateStore | None = None,
                 feeds: list[PriceFeed] | None = None,
                 notifiers: list[Routed] | None = None,
                 clock_ms: Callable[[], int] = wall_clock_ms, notifier: SystemdNotifier | None = None,
                 gateways: dict[str, ExchangeGateway] | None = None, live: bool = False) -> Daemon:
    """Dependencies may be injected (tests); by default they come from settings."""
    check_mode(settings, live)
    monitor = Monitor(settings, registry)
    feeds = feeds if feeds is not None else [build_feed(f, settings) for f in settings.feeds]
    if not feeds:
        raise ConfigError("feeds: the daemon needs at least one [[feeds]] section")
    owns_store = store is None
    relay: list[AlertManager] = []  # the store may report an outage once alerting exists
    store = store if store is not None else open_store(
        settings, on_outage=lambda down, detail: relay[0].store_outage(down, detail) if relay else None)
    ha = settings.ha
    lease = LeaseKeeper(store, ha.instance_id or default_instance_id(), ha.lease_ttl_s) if ha.enabled else None
    gateways = gateways if gateways is not None else build_gateways(settings)
    exchange = ExchangeExecutor(gateways, clock_ms) if settings.execution.mode != "dry_run" else None
    loaded = asyncio.Event()  # the state was read from the store: until then, no order and no state written
    executor = build_executor(settings, monitor, store, clock_ms, lease, exchange, loaded)
    sources = {sym: f.name for f in settings.feeds for sym in f.symbols} | {
        sym: f.name for f in feeds for sym in getattr(f, "symbols", ())}
    running: list[Daemon] = []  # reminders read the monitor in use, which a reload replaces
    alerts = build_alert_manager(settings, store, level_order(monitor), notifiers, clock_ms=clock_ms,
                                 refresh=lambda a: refreshed(running[0].monitor if running else monitor, a, sources))
    relay.append(alerts)
    if lease is not None:  # the leader notifies; while the store is away nobody can lead: all do, rather than none
        alerts.leading = lambda: lease.leading
        alerts.store_away = lambda: bool(getattr(store, "in_outage", False))
    inbox = EngineInbox()
    snapshots = SnapshotWriter(monitor, store, clock_ms, settings.daemon.snapshot_every_s,
                               writing=lambda: lease is None or lease.leading, adopt=inbox.put_control,
                               loaded=loaded.is_set)
    d = Daemon(settings, monitor, inbox, alerts, executor, store, snapshots, feeds,
               asyncio.Queue(settings.daemon.queue_size), clock_ms=clock_ms,
               notifier=notifier or SystemdNotifier(), owns_store=owns_store, loaded=loaded, lease=lease,
               price_sources=sources,
               gateways=gateways, exchange=exchange, sync=SyncApplier(settings) if gateways else None,
               sync_handles={name: SyncHandle(name) for name in gateways})
    running.append(d)
    d.extra = optional_components(d, notifiers is None)
    stale_after = {f.name: f.stale_after_s for f in settings.feeds}
    d.combiner = build_combiner([(f.name, f.symbols, stale_after.get(f.name, 30.0)) for f in feeds],
                                settings.combine.rule, settings.combine.max_deviation, d.inbox.put_tick)
    if settings.http is not None:
        d.http = HttpEndpoint(d, settings.http, bearer_token(settings.http))
    return d


def optional_components(d: Daemon, configured: bool) -> list[Component]:
    """The heartbeat and Telegram control, when configured (not with injected notifiers: tests)."""
    if not configured:
        return []
    return [*heartbeat_component(d), *control_components(d)]
