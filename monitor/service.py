"""Runs the daemon that monitor/wiring.py builds, as supervised tasks.

One task (the engine loop) owns the risk state. Feeds push into its inbox; it
pushes alerts and plans onto queues drained by their own workers, so a slow
notifier or exchange never delays risk. Shutdown runs in reverse start order.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import structlog

from monitor.accounts.synced import Synced, stream_loop, sync_loop
from monitor.alerts.content import Alert, describe
from monitor.daemon import ClockTick, Daemon, Executed, healthy, status_line
from monitor.exchange.gateway import ExchangeGateway
from monitor.execution.base import Execution
from monitor.execution.modes import announce_mode
from monitor.execution.reconcile import reconcile_account
from monitor.feeds.base import FeedEvent, PriceFeed
from monitor.model import EventKind, LevelEvent, Plan, PriceTick, wall_clock_ms
from monitor.persistence import AdoptSnapshots, reconcile_open_plans, restore, snapshot_of
from monitor.retention import retention_loop
from monitor.risk.portfolio import to_native
from monitor.store.base import AccountSnapshot, StoreUnavailable
from monitor.supervisor import Component, CrashLoop, Supervisor
from monitor.telemetry import TickRate

log = structlog.get_logger("daemon")
DRAIN_TIMEOUT_S = 3.0  # on shutdown, time left to deliver queued alerts


# -- the engine loop: the only code that touches risk state ------------------------------
async def engine_loop(d: Daemon) -> None:
    while True:
        message = await d.inbox.get()
        started = time.perf_counter()
        try:
            handle(d, message)
            if type(message) is PriceTick:
                d.tick_latency.observe(time.perf_counter() - started)
        except Exception as err:  # one bad message must not stop monitoring
            log.error("engine message failed", message=type(message).__name__, error=f"{type(err).__name__}: {err}",
                      exc_info=err)


def handle(d: Daemon, message: object) -> None:
    m = d.monitor
    d.engine_seen = time.monotonic()
    if isinstance(message, PriceTick):
        bad = m.bad_ticks
        dispatch(d, m.on_tick(message))
        if m.bad_ticks > bad:
            if m.bad_ticks <= 10 or m.bad_ticks % 1000 == 0:  # counted always, logged sparingly
                log.warning("bad tick skipped", symbol=message.symbol, price=message.price, bid=message.bid,
                            ask=message.ask, ts_ms=message.ts_ms, bad_ticks=m.bad_ticks)
            return
        d.ticks_applied += 1
        d.tick_times.append(d.engine_seen)
        d.first_tick.set()
        if not d.all_priced.is_set() and not m.engine.missing.any():
            d.all_priced.set()
            d.alerts.reconcile(breached_now(d))
    elif isinstance(message, Executed):
        settle(d, message)
    elif isinstance(message, Synced):
        apply_sync(d, message)
    elif isinstance(message, FeedEvent):
        # prices of a dead connection age into STALE by themselves; this is for the operator
        log.info("feed event", feed=message.feed, change=message.kind, detail=message.detail[:300])
    elif hasattr(message, "apply_to"):  # a control message that carries its own change (a config reload)
        dispatch(d, message.apply_to(d))
    elif isinstance(message, ClockTick):
        m.now_ms = max(m.now_ms, message.now_ms)
        dispatch(d, m.check_stale())
        if message.now_ms - d._last_status_ms >= d.settings.daemon.status_every_s * 1000:
            d._last_status_ms = message.now_ms
            log_status(d)
        if message.now_ms - d._last_resync_ms >= d.settings.daemon.resync_every_s * 1000:
            d._last_resync_ms = message.now_ms
            m.engine.resync()


def dispatch(d: Daemon, outcomes: list) -> None:
    events = []
    for item in outcomes:
        if isinstance(item, Plan):
            log.info("rebalance planned", account=item.account, breach_level=item.level, strategy=item.strategy,
                     health=round(item.health_before, 4), expected_health=round(item.expected_health, 4),
                     orders=[f"{o.side} {o.amount:.8g} {o.symbol} @ {o.price:.8g}" for o in item.orders],
                     repays=[f"{r.amount:.8g} {r.asset}" for r in item.repays],
                     top_ups=[f"{t.amount:.8g} {t.asset}" for t in item.transfers],
                     plan_id=item.plan_id)
            try:
                d.plans.put_nowait(item)
            except asyncio.QueueFull:
                log.error("execution queue full, plan dropped", account=item.account, plan_id=item.plan_id)
        elif isinstance(item, LevelEvent):
            d.events[item.kind.value] += 1
            events.append((item, describe(d.monitor, item, d.price_sources)))
    d.alerts.submit_many(events)  # one tick's alerts travel together: one digest per channel


def breached_now(d: Daemon) -> Callable[[str], tuple[frozenset[str], Alert] | None]:
    """For an account: the levels breached now, and a resolved notice for alerts restored from the
    store that no longer are (they cleared while the daemon was stopped)."""
    m = d.monitor

    def lookup(account: str) -> tuple[frozenset[str], Alert] | None:
        i = m.engine.account_index.get(account)
        if i is None:
            return None
        acc, h = m.rules.accounts[i], float(m.engine.health[i])
        native = to_native(acc.model, acc.param, h) if not math.isnan(h) else math.nan
        ev = LevelEvent(account, "", EventKind.RESOLVED, h, native, m.now_ms, m.rules.dry_run)
        breached = {lv.name for lv in acc.levels[:int(m.rules.depth[i])]} | ({"stale"} if m.rules.stale[i] else set())
        return frozenset(breached), Alert.from_event(ev)
    return lookup


def apply_sync(d: Daemon, message: Synced) -> None:
    assert d.sync is not None
    dispatch(d, d.monitor.replace_book(d.sync.book(d.monitor, message)))
    dispatch(d, [e for e in (d.sync.drift_event(d.monitor, message), d.sync.verified(d.monitor, message)) if e])
    handle = d.sync_handles.get(message.account)
    if handle is not None:
        handle.synced.set()


def report_errors(d: Daemon, done: Executed) -> None:
    """Each execution error (a rejection with the venue's reason, a partial fill) is an alert."""
    dispatch(d, [d.monitor.account_event(done.plan.account, done.plan.level, EventKind.REJECTED, error)
                 for error in done.execution.errors])


def settle(d: Daemon, done: Executed) -> None:
    d.changes += 1
    if done.plan.account not in d.monitor.engine.account_index:  # removed by a config reload meanwhile
        log.warning("plan settled for an account no longer configured", account=done.plan.account,
                    plan_id=done.plan.plan_id)
        commit_outcome(d, done)
        return
    ex = done.execution
    if ex.errors:
        report_errors(d, done)
    if ex.duplicate or ex.refused or (ex.errors and not ex.did_something):
        d.actions["failed"] += 1
        d.recent_actions.append((done, None))
        log.warning("plan not executed", plan_id=done.plan.plan_id, duplicate=done.execution.duplicate,
                    refused=done.execution.refused, errors=list(done.execution.errors))
        d.monitor.abandon(done.plan)
        commit_outcome(d, done)
        d.not_executed.append(done.execution)
        d.settled.set()
        return
    # An account traded on its venue shows the fills in its next sync; applying them here too would
    # count them twice when the venue's stream is quicker than this message.
    on_venue = d.exchange is not None and done.plan.account in d.gateways
    if d.sync is not None:
        d.sync.record_paper(done.plan.account, ex)
    result = d.monitor.settle(done.plan, ex, apply=not on_venue)
    if on_venue:
        d.sync.expect(done.plan, done.plan.health_before, ex, d.clock_ms())
    d.actions["executed"] += 1
    d.recent_actions.append((done, result.health_after))
    commit_outcome(d, done, snapshot_of(d.monitor, d.monitor.engine.account_index[done.plan.account], d.clock_ms()))
    log.info("rebalance executed", account=done.plan.account, plan_id=done.plan.plan_id,
             dry_run=d.settings.execution.mode == "dry_run", health_before=round(result.health_before, 4),
             health_after=round(result.health_after, 4),
             fills=[f"{f.order.side} {f.amount:.8g} {f.order.symbol} @ {f.price:.8g} fee {f.fee:.4g}"
                    for f in done.execution.fills],
             top_ups=[f"{t.amount:.8g} {t.asset}" for t in done.execution.transfers])
    if result.event is not None:
        d.events[result.event.kind.value] += 1
        d.alerts.submit(result.event, describe(d.monitor, result.event, d.price_sources))
    handle = d.sync_handles.get(done.plan.account)
    if handle is not None and d.exchange is not None:
        handle.kick.set()  # the venue's balances after the fills: verify against them, not our arithmetic
    d.settled.set()


def commit_outcome(d: Daemon, done: Executed, snapshot: AccountSnapshot | None = None) -> None:
    """A claimed plan's journal entry and closed claim, with the account's book and cooldown after
    it: one commit, queued in the same engine step that changed them."""
    if not (done.execution.duplicate or done.execution.refused):  # else never claimed by this run
        d.snapshots.commit(d.executor.outcome(done.plan, done.execution, () if snapshot is None else (snapshot,)))


def log_status(d: Daemon) -> None:
    m = d.monitor
    d.notifier.status(status_line(d))
    for i in range(len(m.engine.books)):
        st = m.status(i)
        worst = min((e for e in st.exposures if e.distance_pct is not None), key=lambda e: abs(e.distance_pct),
                    default=None)
        handle = d.sync_handles.get(st.name)
        venue = {} if handle is None else {"venue_synced": handle.syncs + handle.streamed > 0}  # else: holdings unknown
        cal = None if d.sync is None else d.sync.calibration.get(st.name)
        if cal is not None:
            venue |= {"native": round(st.native, 6) if math.isfinite(st.native) else None,
                      "venue_native": cal.venue_native, "residual": [round(cal.residual_num, 2), round(cal.residual_den, 2)]}
        log.info("account", account=st.name, health=round(st.health, 4), breach_level=st.level, stale=st.stale,
                 equity=round(st.equity, 2), **venue,
                 nearest_liquidation=None if worst is None else
                 f"{worst.asset} @ {worst.liquidation_price:.6g} ({worst.distance_pct:+.1f}%"
                 + (f", {worst.distance_sigma:.1f}σ daily)" if worst.distance_sigma is not None else ")"))


# -- workers off the tick path -----------------------------------------------------------
async def reconcile(d: Daemon, account: str) -> None:
    """An account's orders of plans a crash left open, or whose outcome a disconnect hid, are
    accounted for; until then its plans are not sent (its sync loop runs this first)."""
    assert d.exchange is not None
    await reconcile_account(d.exchange, d.store, account, d.clock_ms)


async def execution_worker(d: Daemon) -> None:
    while True:
        plan = await d.plans.get()
        # An order placed must be settled even if a shutdown lands mid-call: the call runs
        # on as its own task, and shutdown (_drain) settles it if this worker is cancelled.
        d.executing = (plan, asyncio.ensure_future(d.executor.execute(plan)))
        execution = await outcome_of(plan, asyncio.shield(d.executing[1]))
        d.executing = None
        d.inbox.put_control(Executed(plan, execution))


async def outcome_of(plan: Plan, call) -> Execution:
    try:
        return await call
    except asyncio.CancelledError:
        raise
    except Exception as err:  # the account must not stay "in flight" forever
        log.error("execution failed", plan_id=plan.plan_id, error=f"{type(err).__name__}: {err}")
        return Execution(plan.plan_id, errors=(f"{type(err).__name__}: {err}",))


async def clock_loop(d: Daemon, interval_s: float = 1.0) -> None:
    """Wall-clock heartbeat: staleness must be noticed even when no tick arrives."""
    while True:
        await asyncio.sleep(interval_s)
        d.inbox.put_control(ClockTick(d.clock_ms()))


def feed_component(d: Daemon, feed: PriceFeed) -> Component:
    put = d.combiner.sink_for(feed.name) if d.combiner is not None else d.inbox.put_tick
    rate = d.feed_rates.setdefault(feed.name, TickRate())

    def sink(tick: PriceTick) -> None:
        d.feed_seen[feed.name] = time.monotonic()
        rate.observe()
        d.feed_lag_ms[feed.name] = (tick.recv_ms or wall_clock_ms()) - tick.ts_ms
        put(tick)

    if hasattr(feed, "events"):  # live feeds report connection changes
        feed.events = d.inbox.put_control

    async def start() -> None:
        await feed.run(sink)
    return Component(f"feed:{feed.name}", start)


async def systemd_loop(d: Daemon) -> None:
    """READY=1 once fresh prices value every account; then WATCHDOG=1 at half the interval,
    only while the engine loop handles messages (the clock sends one a second) and at least
    one feed is live: a stalled loop or all feeds dead lets systemd restart us."""
    await d.first_tick.wait()
    try:  # ready once every account is priced, or (an asset silent) after the stale timeout anyway
        await asyncio.wait_for(d.all_priced.wait(), min(a.stale_after_s for a in d.settings.accounts))
    except TimeoutError:
        log.warning("ready without a price for every asset", status=status_line(d))
    d.notifier.ready(status_line(d))
    interval = d.notifier.watchdog_interval_s
    if interval is None:
        return
    while True:
        if healthy(d, interval):
            d.notifier.watchdog()
        await asyncio.sleep(interval / 2)


def sync_component(d: Daemon, gw: ExchangeGateway) -> Component:
    acc = next(a for a in d.settings.accounts if a.name == gw.account)
    ex = d.exchange
    handle = d.sync_handles[gw.account]

    async def start() -> None:
        loops = [sync_loop(gw, acc.sync_every_s, d.inbox.put_control, handle, d.clock_ms,
                           reconcile=(lambda a: reconcile(d, a)) if ex is not None else None,
                           needs_reconcile=lambda a: ex is not None and a not in ex.reconciled)]
        if acc.stream and gw.has_stream:
            loops.append(stream_loop(gw, d.inbox.put_control, handle, d.clock_ms,
                                     on_disconnect=lambda a: ex.reconciled.discard(a) if ex is not None else None))
        await asyncio.gather(*loops)
    return Component(f"sync:{gw.account}", start)


async def warm_start(d: Daemon, on_engine: bool = False) -> None:
    """State from the store: books, cooldowns and caps, plans a crash left open. Before the first
    tick (applied here), or (`on_engine`) later, once a store that was down at start answers: then
    the engine task applies the books, as it owns them. Trading and state writes wait for it."""
    if d.lease is not None:  # who trades is known before the first tick
        await d.lease.renew()
    snaps = await d.store.snapshots()
    if on_engine:
        adopt = AdoptSnapshots(snaps, asyncio.get_running_loop().create_future())
        d.inbox.put_control(adopt)
        restored = await adopt.restored
    else:
        restored = restore(d.monitor, snaps)
    # Open plans are the leader's to reconcile: a standby must not close the leader's plan in flight.
    reconciled = await reconcile_open_plans(d.store, d.executor) if d.lease is None or d.lease.leading else 0
    if d.lease is not None:
        d.lease.on_lead = lambda: take_over(d)
    ks = await d.store.kill_switch()
    d.loaded.set()
    log.info("state loaded", store=d.store.name, accounts_restored=restored, plans_reconciled=reconciled,
             kill_switch=bool(ks and ks.engaged))


async def load_state_later(d: Daemon, retry_s: float = 2.0, remind_s: float = 60.0) -> None:
    """The store could not be read at start: monitor and alert meanwhile, say so loudly (once a
    minute), and load the state as soon as the store answers; trading resumes by itself then."""
    started = last_said = time.monotonic()
    while True:
        try:
            await warm_start(d, on_engine=True)
        except StoreUnavailable as err:
            if time.monotonic() - last_said >= remind_s:
                last_said = time.monotonic()
                log.error("state still not loaded: monitoring and alerting only, no order and no state written",
                          error=str(err), for_s=round(last_said - started))
            await asyncio.sleep(retry_s)
            continue
        await d.alerts.load_state()
        log.warning("state loaded late: trading and state writes resume", after_s=round(time.monotonic() - started, 1))
        return


async def take_over(d: Daemon) -> None:
    """Won leadership: start from the last leader's books, close the plans it left open, and
    notify from its alerts on (those that cleared meanwhile resolve once every account is priced)."""
    await d.snapshots.follow_leader()
    await reconcile_open_plans(d.store, d.executor)
    await d.alerts.take_over()
    if d.all_priced.is_set():
        d.alerts.reconcile(breached_now(d))


async def run_daemon(d: Daemon, stop: asyncio.Event) -> int:
    """Runs until `stop` is set (0) or a component crash-loops (1)."""
    ds = d.settings.daemon
    announce_mode(d.settings)
    late: list[Component] = []
    try:
        await warm_start(d)
    except StoreUnavailable as err:  # never trade on, or write over the store with, the config's books
        log.error("state not loaded: monitoring and alerting only, no order and no state written until "
                  "the store answers", error=str(err))
        late.append(Component("state-loader", lambda: load_state_later(d)))
    sup = Supervisor(ds.max_restarts, ds.restart_window_s, ds.restart_backoff_s)
    # Start order: consumers before producers; shutdown cancels in reverse.
    components = [Component("engine", lambda: engine_loop(d)), Component("alerts", d.alerts.run),
                  Component("execution", lambda: execution_worker(d)), Component("clock", lambda: clock_loop(d)),
                  Component("systemd", lambda: systemd_loop(d)), Component("snapshots", d.snapshots.run),
                  *([Component("lease", d.lease.run)] if d.lease is not None else []), *d.extra,
                  *([Component("retention", lambda: retention_loop(d.store, keep, d.clock_ms))]
                    if (keep := d.settings.store.journal_keep_days) > 0 else []),
                  Component("loop-lag", d.loop_lag.run), *late,
                  *(sync_component(d, gw) for gw in d.gateways.values()),
                  *(feed_component(d, f) for f in d.feeds)]
    if d.http is not None:
        await d.http.start()  # binds now: a port in use is a one-line error before anything runs
        components.append(Component("http-push", d.http.push_loop))
    tasks = [asyncio.create_task(sup.supervise(c), name=c.name) for c in components]
    stopper = asyncio.create_task(stop.wait(), name="stop")
    log.info("daemon started", accounts=len(d.monitor.engine.books), feeds=[f.name for f in d.feeds],
             mode=d.settings.execution.mode)
    code = 0
    try:
        pending = set(tasks) | {stopper}
        while not stopper.done():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and not t.cancelled() and isinstance(t.exception(), CrashLoop):
                    log.critical("stopping: component crash loop", error=str(t.exception()))
                    code = 1
                    stop.set()
            if code:
                break
    finally:
        await shutdown(d, tasks, stopper)
    return code


async def shutdown(d: Daemon, tasks: list[asyncio.Task], stopper: asyncio.Task) -> None:
    log.info("daemon stopping")
    d.notifier.stopping()
    stopper.cancel()
    for t in reversed(tasks):
        if t.get_name() in ("engine", "alerts"):
            continue
        t.cancel()
    try:  # let the engine apply what is queued and the alert worker deliver it
        await asyncio.wait_for(_drain(d), DRAIN_TIMEOUT_S)
    except TimeoutError:
        log.warning("shutdown: undelivered alerts kept in the outbox for the next start", queued=d.alerts.pending())
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if d.http is not None:
        await d.http.stop()
    await d.snapshots.flush()
    if d.lease is not None:
        await d.lease.release()
    for gw in d.gateways.values():
        await gw.close()
    await d.alerts.close()
    if d.owns_store:
        await d.store.close()
    d.notifier.close()
    log.info("daemon stopped", ticks=d.ticks_applied, ticks_coalesced=d.inbox.coalesced,
             bad_ticks=d.monitor.bad_ticks, alerts_sent=d.alerts.sent)


async def _drain(d: Daemon) -> None:
    if d.executing is not None:  # an execution the cancelled worker left running: settle it
        plan, call = d.executing
        d.executing = None
        d.inbox.put_control(Executed(plan, await outcome_of(plan, call)))
    while len(d.inbox):
        await asyncio.sleep(0)
    await d.alerts.drain()
