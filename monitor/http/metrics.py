"""Prometheus metrics, read from the daemon's own state at scrape time (pull model).

Nothing on the tick path knows about Prometheus: the components keep plain
counters (monitor.telemetry, attributes of feeds and the alert manager) and this
collector turns them into metric families when scraped. To add metrics, add a
function to SECTIONS (or a row to FEED_COUNTERS for a counter a feed keeps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from monitor.daemon import Daemon, blind_count, feed_live, healthy
from monitor.risk.portfolio import to_native

PREFIX = "collateral_monitor_"

# Counters a live feed keeps on `feed.stats` (monitor/feeds/stats.py FeedStats); a feed
# without one (simulated, replayed) exports none of them.
FEED_COUNTERS: tuple[tuple[str, str], ...] = (
    ("messages", "Frames or updates the feed received, good or bad"),
    ("bad_frames", "Malformed frames, non-finite, zero, negative or crossed prices, and ticks stamped "
                   "ahead of our clock, skipped"),
    ("out_of_order", "Ticks older (by the venue's sequence number, else time) than the last one sent "
                     "for their symbol, skipped"),
    ("reconnects", "Connections the feed re-established"),
    ("watchdog_trips", "Connections dropped because they went silent"),
    ("rest_polls", "REST fallback requests made while the socket was down"),
)


def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))


def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=list(labels))


def account_metrics(d: Daemon) -> Iterator[Metric]:
    m = d.monitor
    health = gauge("account_health", "Health (1 = liquidation; +Inf without debt; NaN when unknown)", ("account",))
    native = gauge("account_native_ratio", "The model's own figure (HF, LTV, margin level, MM rate)",
                   ("account", "model"))
    level = gauge("account_level", "How many levels are breached (0 = none)", ("account",))
    firing = gauge("account_level_firing", "1 while the level fires", ("account", "level"))
    stale = gauge("account_stale", "1 while some price the account needs is stale", ("account",))
    equity = gauge("account_equity", "Equity in quote units (NaN when a held asset has no price)", ("account",))
    venue = gauge("account_venue_native_ratio", "The venue's own figure at the last sync (model's native unit)",
                  ("account", "model"))
    residual = gauge("account_residual", "What the venue counts that the model cannot attribute, USD, carried "
                     "from the last sync (part: num = margin balance or assets, den = maintenance or liabilities)",
                     ("account", "part"))
    for i, book in enumerate(m.engine.books):
        h = float(m.engine.health[i])
        health.add_metric([book.name], h)
        native.add_metric([book.name, book.model], math.nan if math.isnan(h) else to_native(book.model, book.param, h))
        level.add_metric([book.name], int(m.rules.depth[i]))
        stale.add_metric([book.name], float(m.rules.stale[i]))
        equity.add_metric([book.name], m.engine.equity_of(i))
        cal = None if d.sync is None else d.sync.calibration.get(book.name)
        if cal is not None:
            if cal.venue_native is not None:
                venue.add_metric([book.name, book.model], cal.venue_native)
            residual.add_metric([book.name, "num"], cal.residual_num)
            residual.add_metric([book.name, "den"], cal.residual_den)
        levels = m.rules.accounts[i].levels
        for j in m.rules.state[i].firing_since:
            firing.add_metric([book.name, levels[j].name], 1.0)
    yield from (health, native, level, firing, stale, equity, venue, residual)


def feed_metrics(d: Daemon) -> Iterator[Metric]:
    ticks = counter("feed_ticks", "Ticks the feed delivered", ("feed",))
    rate = gauge("feed_ticks_per_second", "Ticks per second over the last 10 s", ("feed",))
    lag = gauge("feed_lag_seconds", "Receipt time minus event time of the feed's last tick", ("feed",))
    age = gauge("feed_last_tick_age_seconds", "Seconds since the feed's last tick", ("feed",))
    live = gauge("feed_live", "1 while the feed sent a tick within its stale_after_s", ("feed",))
    extra = {attr: counter(f"feed_{attr}", doc, ("feed",)) for attr, doc in FEED_COUNTERS}
    now = time.monotonic()
    for feed in d.feeds:
        r = d.feed_rates.get(feed.name)
        ticks.add_metric([feed.name], r.total if r else 0)
        rate.add_metric([feed.name], r.per_second() if r else 0.0)
        if feed.name in d.feed_lag_ms:
            lag.add_metric([feed.name], d.feed_lag_ms[feed.name] / 1000)
        if feed.name in d.feed_seen:
            age.add_metric([feed.name], now - d.feed_seen[feed.name])
        live.add_metric([feed.name], float(feed_live(d, feed.name)))
        stats = getattr(feed, "stats", None)
        for attr, family in extra.items():
            value = getattr(stats, attr, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                family.add_metric([feed.name], value)
    yield from (ticks, rate, lag, age, live)
    yield from (f for f in extra.values() if f.samples)


def asset_metrics(d: Daemon) -> Iterator[Metric]:
    """Price age per asset and which assets are stale for some account holding them."""
    m = d.monitor
    e = m.engine
    age_g = gauge("asset_price_age_seconds", "Event-time age of the asset's last price", ("asset",))
    stale_g = gauge("asset_stale", "1 while the asset's price is older than a holder's stale_after_s", ("asset",))
    count = 0
    for k, col in enumerate(e.columns):
        if m.fixed[k] or not len(col):
            continue
        asset = e.assets[k]
        if e.last_ts[k] >= 0:
            age_g.add_metric([asset], max(0, m.now_ms - int(e.last_ts[k])) / 1000)
        since = e.last_ts[k] if e.last_ts[k] >= 0 else (m.start_ms if m.start_ms is not None else m.now_ms)
        is_stale = bool(m.now_ms - since > np.min(m.rules.stale_after_ms[col.idx]))
        stale_g.add_metric([asset], float(is_stale))
        count += is_stale
    total = gauge("stale_assets", "Assets whose price is stale for some account holding them")
    total.add_metric([], count)
    yield from (age_g, stale_g, total)


def engine_metrics(d: Daemon) -> Iterator[Metric]:
    h = d.tick_latency
    yield HistogramMetricFamily(PREFIX + "engine_tick_seconds", "Engine processing time per tick (risk, rules, plans)",
                                buckets=h.cumulative(), sum_value=h.sum)
    applied = counter("ticks_applied", "Ticks the engine applied")
    applied.add_metric([], d.ticks_applied)
    coalesced = counter("ticks_coalesced", "Ticks replaced by a newer one before the engine saw them")
    coalesced.add_metric([], d.inbox.coalesced)
    bad = counter("bad_ticks", "Malformed or out-of-order ticks skipped")
    bad.add_metric([], d.monitor.bad_ticks)
    depth = gauge("inbox_depth", "Messages waiting for the engine")
    depth.add_metric([], len(d.inbox))
    lag = gauge("event_loop_lag_seconds", "How late the event loop woke a timer, last probe")
    lag.add_metric([], d.loop_lag.lag_s)
    lag_max = gauge("event_loop_lag_max_seconds", "The largest event-loop lag seen since start")
    lag_max.add_metric([], d.loop_lag.max_lag_s)
    yield from (applied, coalesced, bad, depth, lag, lag_max)


def alert_metrics(d: Daemon) -> Iterator[Metric]:
    events = counter("level_events", "Level events the rules emitted, by kind", ("kind",))
    for kind, n in sorted(d.events.items()):
        events.add_metric([kind], n)
    sent = counter("alerts_sent", "Alert deliveries that succeeded")
    sent.add_metric([], getattr(d.alerts, "sent", 0))
    dropped = counter("alerts_dropped", "Alerts dropped (queue full)")
    dropped.add_metric([], getattr(d.alerts, "dropped", 0))
    queued = gauge("alert_queue_depth", "Alerts waiting for delivery")
    queued.add_metric([], d.alerts.queue.qsize())
    outbox = gauge("outbox_depth", "Undelivered notifications in the durable outbox (0 without one)")
    outbox.add_metric([], outbox_depth(d.alerts))
    actions = counter("actions", "Rebalance plans by outcome", ("outcome",))
    for outcome in ("executed", "failed"):
        actions.add_metric([outcome], d.actions[outcome])
    yield from (events, sent, dropped, queued, outbox, actions)


def outbox_depth(alerts: object) -> int:
    """Notifications no channel has accepted yet: what the channel workers hold (the store's
    outbox mirrors them, and is read only at start)."""
    return sum(len(w) for w in getattr(alerts, "workers", {}).values())


def store_metrics(d: Daemon) -> Iterator[Metric]:
    """What a store that buffers writes through an outage (Redis) reports; others report nothing."""
    store = d.store
    if hasattr(store, "buffered_writes"):
        buffered = gauge("store_buffered_writes", "Writes waiting for the store (an outage is being ridden out)",
                         ("backend",))
        buffered.add_metric([store.name], store.buffered_writes)
        outage = gauge("store_outage", "1 while the store is unreachable", ("backend",))
        outage.add_metric([store.name], float(getattr(store, "in_outage", False)))
        yield from (buffered, outage)


def daemon_metrics(d: Daemon) -> Iterator[Metric]:
    ready = gauge("ready", "1 once fresh prices valued every account (READY=1 was sent)")
    ready.add_metric([], float(d.all_priced.is_set()))
    live = gauge("live", "1 while the tick path is alive (/healthz also needs no account blind)")
    live.add_metric([], float(healthy(d, LIVE_WITHIN_S)))
    blind = gauge("accounts_blind", "Accounts whose health is unknown: stale, or an asset never priced")
    blind.add_metric([], blind_count(d))
    accounts = gauge("accounts", "Accounts monitored")
    accounts.add_metric([], len(d.monitor.engine.books))
    yield from (ready, live, blind, accounts)


LIVE_WITHIN_S = 5.0  # the engine loop hears the clock every second: 5 s of silence is a stall
SECTIONS: tuple[Callable[[Daemon], Iterable[Metric]], ...] = (
    daemon_metrics, account_metrics, feed_metrics, asset_metrics, engine_metrics, alert_metrics, store_metrics,
)


class DaemonCollector(Collector):
    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        for section in SECTIONS:
            yield from section(self.daemon)


def daemon_registry(daemon: Daemon) -> CollectorRegistry:
    """A registry of its own per daemon: no module-level state, and tests may run several daemons."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    return registry
