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
from monitor.errors import ConfigError
from monitor.exchange.gateway import ExchangeGateway, VenueError, VenueUnavailable
from monitor.exchange.venues import VenueState
from monitor.execution.base import Execution
from monitor.model import EventKind, LevelEvent, iso_ms, json_number
from monitor.risk.portfolio import AccountBook, components, evaluate, from_native, to_native
from monitor.risk.trades import apply_execution
from monitor.rules import build_account_rules

log = structlog.get_logger("sync")
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class Synced:
    """An account's state as its venue reported it (a control message for the engine loop)."""
    account: str
    state: VenueState


@dataclass(frozen=True, slots=True)
class Calibration:
    """Our model against the venue at one sync: our own figure before the residual, and what the
    venue counts that the model cannot attribute (USD), carried until the next sync."""
    ts_ms: int
    model_native: float
    venue_native: float | None
    residual_num: float = 0.0
    residual_den: float = 0.0
    parts: dict[str, tuple[float, float]] = field(default_factory=dict)  # component -> (ours, the venue's)

    def view(self) -> dict:
        """What status, the page and the log show: the venue's figure, our model's, the residual."""
        return {"venue_native": self.venue_native, "model_native": json_number(self.model_native),
                "residual": {"num": self.residual_num, "den": self.residual_den}, "as_of": iso_ms(self.ts_ms)}

    def disagreeing(self, tolerance: float) -> list[str]:
        """Components whose figures part beyond `tolerance`, the largest gap first."""
        gaps = []
        for name, (ours, venue) in self.parts.items():
            scale = max(abs(venue), abs(ours))
            if scale > 0 and abs(ours - venue) / scale > tolerance:
                gaps.append((abs(ours - venue) / scale, name))
        return [name for _, name in sorted(gaps, reverse=True)]


@dataclass(frozen=True, slots=True)
class VenueTerms:
    """What a venue publishes about an account and rarely changes: collateral ratios, borrow
    maintenance tiers, the liquidation point. A state that carries none of them (a stream update)
    leaves the last ones in force; so does a config reload."""
    tiers: dict = field(default_factory=dict)
    borrow_tiers: dict = field(default_factory=dict)
    liquidation_level: float | None = None

    def updated(self, state: VenueState) -> VenueTerms:
        return VenueTerms(state.tiers or self.tiers, state.borrow_tiers or self.borrow_tiers,
                          state.liquidation_level if state.liquidation_level is not None else self.liquidation_level)


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
        self.calibration: dict[str, Calibration] = {}  # account -> the last sync's comparison
        self.terms: dict[str, VenueTerms] = {}  # account -> what its venue last published
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
        self.terms[msg.account] = self.terms.get(msg.account, VenueTerms()).updated(msg.state)
        book = self.calibrate(monitor, self.with_venue_terms(monitor, book), msg)
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

    def with_venue_terms(self, monitor, book: AccountBook) -> AccountBook:
        """The book under the venue's last published terms (the config's where it publishes none)."""
        terms = self.terms.get(book.name)
        if terms is None:
            return book
        return self.venue_level(monitor, self.venue_schedules(book, terms), terms)

    def reapply(self, monitor, settings: Settings) -> None:
        """A reloaded config's monitor: each synced account's book takes the venue's terms and the
        last sync's residual again, rather than the config's until the next sync. Under `settings`,
        which this applier follows only once the reload has succeeded."""
        running = self.settings, self.accounts
        self.follow(settings)
        try:
            for name in self.accounts:
                i = monitor.engine.account_index.get(name)
                if i is None:
                    continue
                book = self.with_venue_terms(monitor, monitor.engine.books[i])
                cal = self.calibration.get(name)
                if cal is not None:
                    book = replace(book, residual_num=cal.residual_num, residual_den=cal.residual_den)
                if book != monitor.engine.books[i]:
                    monitor.engine.set_book(book)
        finally:
            self.settings, self.accounts = running

    def venue_schedules(self, book: AccountBook, terms: VenueTerms) -> AccountBook:
        """The venue's published collateral ratios and borrow maintenance tiers replace the
        config's, each in the venue's own unit (Bybit and OKX band collateral by coin quantity),
        so they stay exact at every price between syncs."""
        known = self.settings.assets
        weights = {**book.weights, **{a: t for a, t in terms.tiers.items() if a in known}}
        borrow = {**book.borrow_tiers, **{a: t for a, t in terms.borrow_tiers.items() if a in known}}
        used = {a: t.first_rate for a, t in terms.tiers.items() if a in known}
        if used and book.name not in self.weights_logged:
            self.weights_logged.add(book.name)
            log.info("venue collateral ratios override the config's weights", account=book.name,
                     venue=self.accounts[book.name].source, ratios=used)
        return replace(book, weights=weights, borrow_tiers=borrow)

    def venue_level(self, monitor, book: AccountBook, terms: VenueTerms) -> AccountBook:
        """The venue's own liquidation point for the account (Binance margin: forceLiquidationBar)
        unless the config sets one; the levels, written in the venue's figure, follow it."""
        level, acc = terms.liquidation_level, self.accounts[book.name]
        if level is None or acc.liquidation_level is not None or book.model == "ltv":
            return book
        i = monitor.engine.account_index[book.name]
        if monitor.rules.accounts[i].param != level:
            try:
                monitor.rules.retarget(i, build_account_rules(acc, level))
            except ConfigError as err:  # levels written in health and in the figure no longer fit together
                log.error("the venue's liquidation level does not fit the account's levels", account=book.name,
                          level=level, error=str(err))
                return book
            log.info("liquidation level from the venue", account=book.name, level=level, was=book.param)
        return replace(book, scale=1.0 / level, param=level)

    def calibrate(self, monitor, book: AccountBook, msg: Synced) -> AccountBook:
        """The book with the residual that makes it agree with the venue's own figures at this sync.

        With the venue's totals, the residual is what each side of the ratio misses; with only its
        risk figure, the maintenance the venue counts beyond ours. Without a price for every held
        asset there is nothing to calibrate against: no residual. A state without any figure of the
        venue's (a stream update) keeps the last sync's residual: it is carried until the next sync."""
        state = msg.state
        last = self.calibration.get(msg.account)
        if state.totals is None and state.native is None:
            if last is None:
                return book
            return replace(book, residual_num=last.residual_num, residual_den=last.residual_den)
        prices = monitor.engine.price_map()
        if any(math.isnan(prices.get(a, math.nan)) for a, e in book.exposures.items() if not e.is_empty):
            self.calibration.pop(msg.account, None)
            return book
        ours = evaluate(book, prices)
        model_native = to_native(book.model, book.param, ours.health)
        res_num = res_den = 0.0
        parts = {}
        if state.totals is not None:
            res_num, res_den = state.totals.num - ours.num, state.totals.den - ours.den
            mine = components(book, prices)
            parts = {k: (mine[k], v) for k, v in state.totals.parts.items() if k in mine}
        elif state.native is not None and state.native > 0 and ours.num > 0:
            h_venue = from_native(book.model, book.param, state.native)
            res_den = book.scale * ours.num / h_venue - ours.den
        # A residual within float noise of the sums is none (same figures computed two ways).
        noise = 1e-9 * max(abs(ours.num), abs(ours.den), 1.0)
        res_num, res_den = (0.0 if abs(r) < noise else r for r in (res_num, res_den))
        self.calibration[msg.account] = Calibration(state.ts_ms, model_native, state.native, res_num, res_den, parts)
        return replace(book, residual_num=res_num, residual_den=res_den)

    def drift_event(self, monitor, msg: Synced):
        """A DRIFT alert when our model's figure (before the residual) and the venue's part beyond
        tolerance (once, until they agree), naming the components that disagree when it can."""
        if msg.account in self.paper:
            return None  # paper trades make our book differ from the venue's on purpose
        acc = self.accounts[msg.account]
        cal = self.calibration.get(msg.account)
        if cal is None or not math.isfinite(cal.model_native):
            # No comparison (no price yet), or no figure of ours: the venue's finite one disagrees
            # unless it is unknown too.
            if cal is None or msg.state.native is None:
                return None
        ours = cal.model_native
        gap = drift(ours, msg.state.native, acc.drift_tolerance) if math.isfinite(ours) else math.inf
        if gap is None:
            if msg.state.native is not None:
                self.drifting.discard(msg.account)
            return None
        if msg.account in self.drifting:
            return None
        self.drifting.add(msg.account)
        parts = cal.disagreeing(acc.drift_tolerance)
        where = (" in " + ", ".join(f"{p} (ours {cal.parts[p][0]:.6g}, the venue's {cal.parts[p][1]:.6g})"
                                    for p in parts)) if parts else ""
        log.warning("model drift", account=msg.account, ours=ours if math.isfinite(ours) else None,
                    venue=msg.state.native, gap=round(gap, 4) if math.isfinite(gap) else None,
                    tolerance=acc.drift_tolerance, components=parts)
        i = monitor.engine.account_index[msg.account]
        h = float(monitor.engine.health[i])
        apart = f"{gap:.1%} apart" if math.isfinite(gap) else "ours is unbounded"
        return LevelEvent(msg.account, "drift", EventKind.DRIFT, h, ours, monitor.now_ms,
                          self.dry_run,
                          f"{acc.source} reports {msg.state.native:.6g}, our model computes {ours:.6g} ({apart}, "
                          f"tolerance {acc.drift_tolerance:.1%}){where}: health follows the venue's figure "
                          "through a residual until they agree; check the model before trusting its actions")
