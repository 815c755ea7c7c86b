"""Holdings synced from an exchange: venue state -> the risk core's AccountBook, on a schedule.

The sync task only fetches; it never touches risk state. It posts a `Synced` message
to the engine's inbox and the engine loop applies it (monitor/service.py), so the
engine keeps a single owner. A failed fetch is retried with backoff; the first success
after a failure reconciles the account's orders before anything new is planned.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import structlog

from monitor.accounts.static import build_book
from monitor.config import AccountSettings, Settings, position_asset
from monitor.exchange.gateway import ExchangeGateway, VenueError, VenueUnavailable
from monitor.exchange.venues import VenueState
from monitor.execution.base import Execution
from monitor.model import EventKind, LevelEvent
from monitor.risk.portfolio import AccountBook, to_native
from monitor.risk.trades import apply_execution
from monitor.risk.weights import WeightSchedule

log = structlog.get_logger("sync")
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class Synced:
    """An account's state as its venue reported it (a control message for the engine loop)."""
    account: str
    state: VenueState


@dataclass
class SyncHandle:
    """Lets the execution side ask for a sync now (after fills) and tests wait for one."""
    account: str
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    syncs: int = 0
    failures: int = 0
    streamed: int = 0  # balance updates applied from the private stream
    stream_failures: int = 0
    synced: asyncio.Event = field(default_factory=asyncio.Event)


def book_from_state(settings: Settings, acc: AccountSettings, state: VenueState) -> tuple[AccountBook, list[str]]:
    """The book, and the coins the venue reports that no [assets] section prices (left out)."""
    known = settings.assets
    symbols = {a.symbol: n for n, a in known.items() if a.symbol}
    holdings = {a: x for a, x in state.holdings.items() if a in known}
    borrowed = {a: x for a, x in state.borrowed.items() if a in known}
    positions = [p for p in state.positions if position_asset(p.symbol, symbols, known) is not None]
    unknown = sorted({a for a in (*state.holdings, *state.borrowed) if a not in known}
                     | {p.symbol for p in state.positions if position_asset(p.symbol, symbols, known) is None})
    reserve = {a: x for a, x in state.reserve.items() if a in known}
    return build_book(settings, acc, holdings, borrowed, positions, reserve), unknown


Reconcile = Callable[[str], Awaitable[object]]


async def sync_loop(gw: ExchangeGateway, every_s: float, post: Callable[[Synced], None], handle: SyncHandle,
                    clock_ms: Callable[[], int], reconcile: Reconcile | None = None,
                    needs_reconcile: Callable[[str], bool] = lambda _a: True) -> None:
    """Fetches the account every `every_s` (or when kicked) and posts it to the engine."""
    backoff = 1.0
    while True:
        try:
            if reconcile is not None and needs_reconcile(gw.account):
                await reconcile(gw.account)
            state = await gw.fetch_state(clock_ms())
        except VenueError as err:
            handle.failures += 1
            level = log.warning if isinstance(err, VenueUnavailable) else log.error
            level("account sync failed", account=gw.account, venue=gw.venue, error=err.reason, retry_in_s=backoff)
            await _wait(handle, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            continue
        backoff = 1.0
        post(Synced(gw.account, state))
        handle.syncs += 1
        await _wait(handle, every_s)


async def stream_loop(gw: ExchangeGateway, post: Callable[[Synced], None], handle: SyncHandle,
                      clock_ms: Callable[[], int], on_disconnect: Callable[[str], None]) -> None:
    """Posts every update of the venue's private streams, from the first REST sync on. A broken
    stream is a reconnect: the account is reconciled again (by the sync loop, kicked here) before it trades."""
    backoff = 1.0
    while True:
        try:
            state = await gw.watch_state(clock_ms)
        except VenueError as err:
            handle.stream_failures += 1
            log.warning("account stream failed", account=gw.account, venue=gw.venue, error=err.reason,
                        retry_in_s=backoff)
            on_disconnect(gw.account)
            handle.kick.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            continue
        backoff = 1.0
        if handle.syncs == 0:
            # Folded into the gateway, not posted: a venue's first push (OKX sends one on
            # subscribing) can beat the first REST sync, which brings positions and tiers.
            continue
        post(Synced(gw.account, state))
        handle.streamed += 1
        if gw.resync_wanted:
            handle.kick.set()


async def _wait(handle: SyncHandle, seconds: float) -> None:
    handle.kick.clear()
    try:
        await asyncio.wait_for(handle.kick.wait(), seconds)
    except TimeoutError:
        pass


def drift(model_native: float, venue_native: float | None, tolerance: float) -> float | None:
    """The relative gap between our figure and the venue's when it exceeds `tolerance`, else None."""
    if venue_native is None or not math.isfinite(model_native) or venue_native <= 0:
        return None
    gap = abs(model_native - venue_native) / venue_native
    return gap if gap > tolerance else None


class SyncApplier:
    """Engine-loop side of account sync: replaces books, checks model drift, and in dry-run
    keeps the paper ledger on top of the venue's balances (paper orders never reach it)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.dry_run = settings.execution.mode == "dry_run"
        self.accounts = {a.name: a for a in settings.accounts if a.source != "config"}
        self.paper: dict[str, list[Execution]] = {}  # account -> what was executed on paper since start
        self.drifting: set[str] = set()
        self.warned_unknown: set[str] = set()
        self.weights_logged: set[str] = set()
        self.to_verify: dict[str, tuple] = {}  # account -> (plan, health before, ts of the last fill)

    def expect(self, plan, before: float, done: Execution, now_ms: int) -> None:
        """Verify `plan` on the first venue state taken after its last fill (or its top-up)."""
        if done.fills or done.transfers:
            last = max([f.ts_ms for f in done.fills] + ([now_ms] if done.transfers else []))
            self.to_verify[plan.account] = (plan, before, last)

    def verified(self, monitor, msg: Synced):
        """The verification event (or None) once a state after the fills arrived."""
        pending = self.to_verify.get(msg.account)
        if pending is None or msg.state.ts_ms < pending[2]:
            return None
        del self.to_verify[msg.account]
        plan, before, _ = pending
        after = float(monitor.engine.health[monitor.engine.account_index[msg.account]])
        event = monitor.verify(plan, before, after)
        log.info("rebalance verified on the venue's balances", account=msg.account, plan_id=plan.plan_id,
                 health_before=round(before, 4), health_after=round(after, 4),
                 expected_health=round(plan.expected_health, 4), ok=event is None)
        return event

    def follow(self, settings: Settings) -> None:
        """A reloaded config: new weights, tolerances and levels (the venue links cannot change)."""
        self.settings = settings
        self.accounts = {a.name: a for a in settings.accounts if a.source != "config"}

    def record_paper(self, account: str, done: Execution) -> None:
        if self.dry_run and account in self.accounts:
            self.paper.setdefault(account, []).append(done)

    def book(self, monitor, msg: Synced) -> AccountBook:
        acc = self.accounts[msg.account]
        book, unknown = book_from_state(self.settings, acc, msg.state)
        if unknown and msg.account not in self.warned_unknown:
            self.warned_unknown.add(msg.account)
            log.warning("venue holdings without an [assets] section are left out", account=msg.account,
                        unpriced=unknown[:20])
        book = self.venue_weights(monitor, book, msg)
        venue_book = book
        try:
            for done in self.paper.get(msg.account, ()):
                book = apply_execution(book, done.fills, done.repays, done.transfers, monitor.schedules)
        except ValueError as err:  # the venue's balances moved under the paper trades (e.g. a manual sale)
            log.warning("paper ledger no longer fits the venue's balances: reset to the venue's", account=msg.account,
                        error=str(err))
            self.paper.pop(msg.account, None)
            return venue_book
        return book

    def venue_weights(self, monitor, book: AccountBook, msg: Synced) -> AccountBook:
        """The venue's published collateral ratios replace the config's weights. Venues band
        them by coin quantity; the engine bands by value, so the bands are valued at the
        asset's price at each sync (they move with the price between syncs otherwise)."""
        weights = dict(book.weights)
        used = {}
        for asset in self.settings.assets:
            bands = msg.state.tiers.get(asset)
            if not bands:
                continue
            price = 1.0  # one flat ratio has no bound to value
            if len(bands) > 1:
                price = monitor.engine.price_of(asset) if asset in monitor.engine.asset_index else math.nan
                if math.isnan(price):  # no price yet: the config's weight until the next sync
                    continue
            lows = tuple(q * price for q, _ in bands)
            weights[asset] = WeightSchedule(lows, tuple(r for _, r in bands))
            used[asset] = bands[0][1]
        if used and msg.account not in self.weights_logged:
            self.weights_logged.add(msg.account)
            log.info("venue collateral ratios override the config's weights", account=msg.account,
                     venue=self.accounts[msg.account].source, ratios=used)
        return replace(book, weights=weights)

    def drift_event(self, monitor, msg: Synced):
        """A DRIFT alert when our figure and the venue's part beyond tolerance (once, until they agree)."""
        if msg.account in self.paper:
            return None  # paper trades make our book differ from the venue's on purpose
        acc = self.accounts[msg.account]
        i = monitor.engine.account_index[msg.account]
        book = monitor.engine.books[i]
        h = float(monitor.engine.health[i])
        if math.isnan(h) or bool(monitor.engine.missing[i]):
            return None
        ours = to_native(book.model, book.param, h)
        gap = drift(ours, msg.state.native, acc.drift_tolerance)
        if gap is None:
            if msg.state.native is not None:
                self.drifting.discard(msg.account)
            return None
        if msg.account in self.drifting:
            return None
        self.drifting.add(msg.account)
        log.warning("model drift", account=msg.account, ours=round(ours, 6), venue=msg.state.native,
                    gap=round(gap, 4), tolerance=acc.drift_tolerance)
        return LevelEvent(msg.account, "drift", EventKind.DRIFT, h, ours, monitor.now_ms, self.dry_run,
                          f"{acc.source} reports {msg.state.native:.6g}, we compute {ours:.6g} "
                          f"({gap:.1%} apart, tolerance {acc.drift_tolerance:.1%}): our weights or model are "
                          "wrong for this account; do not trust its actions until they agree")
