"""SIGHUP: re-read the config and apply it without losing risk or alert state.

The new file must pass every check `check-config` runs before anything changes; a
bad one is rejected with one log line and the running config stays. A good one
reaches the engine task as a control message (one task owns the risk state):
a Monitor is built from the new config and takes over the live state of the old
one (prices, volatility, each kept account's breaches, cooldowns, daily counts,
and the holdings fills moved), so levels, thresholds, weights, channels and
accounts change in place. Sections that hold running resources (feeds, store,
HTTP, daemon tuning) apply at the next restart, and the log says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog

from monitor.accounts.static import build_book
from monitor.alerts.build import Routed, build_alert_manager, build_notifiers
from monitor.config import Settings, load_settings
from monitor.core import Monitor, check_strategies
from monitor.daemon import Daemon, level_order, status_line
from monitor.errors import ConfigError, UserError
from monitor.model import LevelEvent, Plan
from monitor.persistence import config_digest
from monitor.risk.portfolio import AccountBook
from monitor.wiring import build_executor
from strategies.base import StrategyRegistry

log = structlog.get_logger("reload")
NotifierFactory = Callable[[Settings], list[Routed]]
RESTART_ONLY = ("daemon", "feeds", "store", "ha", "http")  # sections bound to running resources


def carried_books(d: Daemon, settings: Settings) -> list[AccountBook]:
    """Each account's book under the new config. An account whose holdings the config did not
    change keeps the holdings (and reserve) its fills and top-ups moved to; an edited one takes the config's (the rule a
    warm start from snapshots follows too)."""
    old_cfg = {a.name: a for a in d.settings.accounts}
    engine = d.monitor.engine
    out = []
    for acc in settings.accounts:
        book = build_book(settings, acc)
        before = old_cfg.get(acc.name)
        synced = acc.source != "config"  # holdings come from the venue, whatever else the edit changed
        if before is not None and (synced or config_digest(before) == config_digest(acc)):
            live = engine.books[engine.account_index[acc.name]]
            if set(live.exposures) <= set(settings.assets):
                book = replace(book, exposures=live.exposures, reserve=live.reserve)
        out.append(book)
    return out


def venue_links(settings: Settings) -> dict[str, tuple]:
    keys = ("source", "api_key_env", "api_secret_env", "secrets_file", "testnet", "rest_url", "ws_url", "stream",
            "reserve_wallet")
    return {a.name: tuple(getattr(a, k) for k in keys) for a in settings.accounts if a.source != "config"}


def unchanged_channels(old: Settings, new: Settings) -> frozenset[str]:
    """Channels whose settings (and alert secrets file) a reload leaves as they were."""
    if old.alerts.secrets_file != new.alerts.secrets_file:
        return frozenset()
    before = {n.name: n for n in old.notifiers}
    return frozenset(n.name for n in new.notifiers if before.get(n.name) == n)


def check_reloadable(running: Settings, new: Settings) -> list[str]:
    """Rejects what must never change under a running daemon; returns the sections that wait for a restart."""
    if new.execution.mode != running.execution.mode:
        raise ConfigError(f"execution.mode: {running.execution.mode!r} -> {new.execution.mode!r} "
                          "needs a restart, not a reload")
    if venue_links(new) != venue_links(running):  # a connection (and its credentials) opens at start
        raise ConfigError("accounts: exchange accounts added, removed or re-pointed (source, credentials, "
                          "testnet, URLs) need a restart, not a reload")
    return [s for s in RESTART_ONLY if getattr(new, s) != getattr(running, s)]


@dataclass
class Reconfigure:
    """The control message the engine task applies between two ticks."""

    settings: Settings
    registry: StrategyRegistry
    notifiers: NotifierFactory
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def apply_to(self, d: Daemon) -> list[LevelEvent | Plan]:
        try:  # everything that can fail happens before anything running is touched
            new = Monitor(self.settings, self.registry, books=carried_books(d, self.settings))
            if d.sync is not None:  # the venues' terms and residuals, not the config's until the next sync
                d.sync.reapply(new, self.settings)
            check_strategies(new)  # with the checks above, all that check-config runs
            channels = build_alert_manager(self.settings, d.store, level_order(new), self.notifiers(self.settings),
                                           clock_ms=d.clock_ms)
            outcomes = new.carry_over(d.monitor)
        except Exception as err:  # the running config stays whatever went wrong
            self.done.set_result(err)
            return []
        old_settings = d.settings
        d.monitor, d.settings = new, self.settings
        # also the kill switch; the venue executor keeps its reconciled state and is re-pointed at `new`
        d.executor = build_executor(self.settings, new, d.store, d.clock_ms, d.lease, d.exchange)
        if d.sync is not None:
            d.sync.follow(self.settings)
        d.snapshots.follow(new)
        d.alerts.reconfigure(channels, unchanged_channels(old_settings, self.settings))
        d.changes += 1
        self.done.set_result(None)
        return outcomes


class Reloader:
    """Re-reads `path` on demand; one reload at a time."""

    def __init__(self, path: str, registry: StrategyRegistry, notifiers: NotifierFactory = build_notifiers):
        self.path = path
        self.registry = registry
        self.notifiers = notifiers  # settings -> channels (tests inject theirs, as with build_daemon)
        self._lock = asyncio.Lock()
        self.reloads = 0
        self.rejected = 0

    async def reload(self, d: Daemon) -> bool:
        async with self._lock:
            ready = d.notifier.is_ready
            if ready:
                d.notifier.reloading()
            try:
                ok = await self._apply(d)
            finally:
                if ready:
                    d.notifier.ready(status_line(d))
            return ok

    async def _apply(self, d: Daemon) -> bool:
        try:
            settings = load_settings(self.path)
            pending = check_reloadable(d.settings, settings)
            message = Reconfigure(settings, self.registry, self.notifiers)
            d.inbox.put_control(message)
            error = await message.done
            if isinstance(error, UserError):
                raise error
            if error is not None:
                raise ConfigError(f"{self.path}: {type(error).__name__}: {error}") from None
        except UserError as err:
            self.rejected += 1
            log.error("config reload rejected, the running config stays", error=str(err))
            return False
        self.reloads += 1
        log.info("config reloaded", path=self.path, accounts=len(settings.accounts),
                 levels=sum(len(a.levels) for a in settings.accounts), notifiers=[n.name for n in settings.notifiers],
                 **({"applies_at_restart": pending} if pending else {}))
        return True
