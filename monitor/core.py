"""The monitoring loop without I/O: ticks in; events and plans out; fills back in.

The daemon (asyncio) and replay (a loop over a file) drive the same Monitor, so
what a replay shows is what the daemon would have done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from monitor.accounts.static import build_books, tiers_of
from monitor.config import AccountSettings, Settings
from monitor.errors import ConfigError
from monitor.exchange.venues import PERPS_ONLY
from monitor.limits import usable_price
from monitor.execution.base import Execution
from monitor.model import EventKind, Fill, LevelEvent, Plan, PriceTick, iso_ms
from monitor.risk.engine import RiskEngine
from monitor.risk.portfolio import AccountBook, evaluate, to_native
from monitor.risk.solve import liquidation_price
from monitor.risk.trades import apply_execution
from monitor.risk.tiers import Tiers
from monitor.risk.volatility import VolatilityTracker
from monitor.rules import LevelSpec, RebalanceRequest, Rules, build_account_rules
from strategies.base import Market, MarketView, PlanRequest, Strategy, StrategyRegistry, params_problem

STALE_CHECK_MS = 1000  # how often (event time) staleness is re-evaluated


@dataclass(frozen=True, slots=True)
class ExposureStatus:
    """Status of one asset of one account: where it liquidates the account alone."""

    asset: str
    price: float
    liquidation_price: float | None
    distance_pct: float | None  # signed: negative = the price must fall
    distance_sigma: float | None  # |ln(liq/price)| in daily EWMA volatilities


@dataclass(frozen=True, slots=True)
class AccountStatus:
    name: str
    model: str
    health: float  # NaN: unknown (a held asset without a price)
    native: float
    equity: float  # NaN: unknown, as health
    level: str | None  # deepest breached level
    stale: bool
    exposures: tuple[ExposureStatus, ...]
    unpriced: tuple[str, ...] = ()  # held assets that never had a price


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a settled plan did to the account."""

    health_before: float
    health_after: float
    event: LevelEvent | None  # VERIFY_FAILED when execution did not help as planned


def markets_from_settings(settings: Settings) -> dict[str, Market]:
    out = {}
    for name, a in settings.assets.items():
        if a.symbol and "/" in a.symbol and a.tradable:
            base, quote = a.symbol.split(":")[0].split("/", 1)
            out[name] = Market(a.symbol, base, quote, a.lot_size, a.min_notional)
    return out


class Monitor:
    """Engine + rules + strategies. One caller at a time (it owns the risk state)."""

    def __init__(self, settings: Settings, registry: StrategyRegistry, books: list[AccountBook] | None = None,
                 act: bool = True):
        self.settings = settings
        self.act = act  # False: the baseline run, alerts only
        self.books_cfg = {a.name: a for a in settings.accounts}
        books = books if books is not None else build_books(settings)
        assets = list(settings.assets)
        fixed = {n: float(a.price) for n, a in settings.assets.items() if a.symbol is None}
        self.fixed_prices = fixed
        self.engine = RiskEngine(books, assets, fixed)
        self.fixed = np.array([a in fixed for a in assets])
        self.rules = Rules([build_account_rules(self.books_cfg[b.name], b.param) for b in books],
                           dry_run=settings.execution.mode == "dry_run")
        self.vol = VolatilityTracker(len(assets))
        self.markets = markets_from_settings(settings)
        self.stables = frozenset(a for a in settings.assets if settings.is_stable(a))
        self.schedules = {n: tiers_of(a.weight) for n, a in settings.assets.items()}
        self.assets_by_symbol: dict[str, list[int]] = {}
        for k, a in enumerate(assets):
            if settings.assets[a].symbol:
                self.assets_by_symbol.setdefault(settings.assets[a].symbol, []).append(k)
        self.quotes: dict[str, tuple[float, float]] = {}
        self.strategies = self._load_strategies(registry)
        self.now_ms = 0
        self.start_ms: int | None = None
        self.bad_ticks = 0
        self._ineffective: set[tuple[int, str]] = set()  # (account, level) told "cannot help" already
        self._next_stale_check = 0

    def _load_strategies(self, registry: StrategyRegistry) -> dict[str, Strategy]:
        out = {}
        for acc in self.settings.accounts:
            for lv in acc.levels:
                if lv.strategy and lv.strategy not in out:
                    out[lv.strategy] = registry.get(lv.strategy)
        return out

    def strategy_problems(self) -> list[str]:
        """Rebalance levels whose strategy can never raise the account's health (check-config)."""
        problems = []
        for acc, book in zip(self.settings.accounts, self.engine.books):
            for lv in acc.levels:
                if lv.action == "rebalance":
                    strategy = self.strategies[lv.strategy]
                    try:
                        reason = params_problem(strategy, lv.params) or self._judge(acc, book, strategy)
                    except Exception as err:  # a user strategy's check() is user code
                        reason = f"check failed ({type(err).__name__}: {err})"
                    if reason:
                        problems.append(f"accounts ({acc.name}).levels ({lv.name}): {lv.strategy}: {reason}")
        return problems

    def _judge(self, acc: AccountSettings, book: AccountBook, strategy: Strategy) -> str | None:
        if acc.source == "config":
            return strategy.check(book, self.stables, self.markets)
        # Holdings come from the venue at run time: nothing to judge them by yet, except the config.
        if acc.source in PERPS_ONLY and not getattr(strategy, "cuts_positions_only", False):
            return f"{acc.source} trades perpetuals only: use a strategy that cuts positions (reduce_position)"
        if getattr(strategy, "draws_reserve", False) and not acc.reserve_wallet:
            return "set reserve_wallet (the venue wallet to top up from, e.g. \"funding\")"
        return None

    # -- the tick path ----------------------------------------------------------------
    def on_tick(self, tick: PriceTick) -> list[LevelEvent | Plan]:
        ks = self.assets_by_symbol.get(tick.symbol)
        if not ks:
            return []  # a symbol no account needs
        if not valid_tick(tick) or tick.ts_ms < self.engine.last_ts[ks[0]]:
            self.bad_ticks += 1  # malformed, or older than what we have: never used
            return []
        self.now_ms = max(self.now_ms, tick.ts_ms)
        if self.start_ms is None:
            self.start_ms = tick.ts_ms  # assets get stale_after_s from here to send their first price
        touched = []
        for k in ks:
            asset = self.engine.assets[k]
            if tick.bid is not None and tick.ask is not None:
                self.quotes[asset] = (tick.bid, tick.ask)
            touched.append(self.engine.apply(k, tick.price, tick.ts_ms))
            self.vol.update(k, tick.price, tick.ts_ms)
        out: list = []
        # Staleness first, so a tick that makes an account fresh can also let it act.
        if self.now_ms >= self._next_stale_check or any(self.rules.stale[idx].any() for idx in touched):
            out += self.check_stale()
        for idx in touched:
            out += self._decide(idx)
        return out

    def _decide(self, idx: np.ndarray) -> list:
        out = []
        for item in self.rules.evaluate(idx, self.engine.health, self.now_ms):
            if isinstance(item, RebalanceRequest):
                if not self.act:
                    self.rules.release(item.account)
                    continue
                outcome = self._plan(item)
                if outcome is not None:
                    out.append(outcome)
            else:
                if item.kind == EventKind.RESOLVED:
                    self._ineffective.discard((self.engine.account_index[item.account], item.level))
                out.append(item)
        return out

    def check_stale(self) -> list[LevelEvent]:
        """STALE / FRESH events. Called on ticks and on the daemon's clock ticks, so an asset that
        never sends a price goes stale `stale_after_s` after the start even if nothing ever ticks."""
        if self.start_ms is None:
            if self.now_ms <= 0:
                return []  # no time known yet (a reload before any tick or clock tick)
            self.start_ms = self.now_ms  # the grace for first prices starts now, not at epoch 0
        self._next_stale_check = self.now_ms + STALE_CHECK_MS
        e, since = self.engine, self.start_ms
        mask = e.stale_accounts(self.now_ms, self.rules.stale_after_ms, self.fixed, since)

        def stale_of(i: int) -> tuple[list[str], int, str]:
            """The stale assets, the moment they went stale (it follows from the prices, not from
            this process's clock, so instances sharing a store agree on the alert's time), and why."""
            after = self.rules.stale_after_ms[i]
            assets = e.stale_assets_of(i, self.now_ms, after, self.fixed, since)
            seen = {a: int(e.last_ts[e.asset_index[a]]) for a in assets}
            went = min((t if t >= 0 else since) for t in seen.values()) + int(after) if seen else self.now_ms
            return assets, min(went, self.now_ms), stale_detail(seen)
        return self.rules.update_stale(mask, e.health, self.now_ms, stale_of)

    def blind(self) -> np.ndarray:
        """Accounts whose health is unknown: stale, or holding an asset that never had a price."""
        return self.rules.stale | (self.engine.missing > 0)

    def _plan(self, req: RebalanceRequest) -> Plan | LevelEvent | None:
        """A plan to execute, or an INEFFECTIVE alert (once until the level resolves or the book changes)."""
        i, lv = req.account, req.level
        h = float(self.engine.health[i])
        plan = self.plan_for(i, lv, req.ts_ms, req.notional_budget)
        if not plan.is_empty and plan.expected_health > h:
            return plan  # in flight until settle() or abandon()
        self.rules.release(i)
        if (i, lv.name) in self._ineffective:
            return None
        self._ineffective.add((i, lv.name))
        return self._event(i, lv.name, EventKind.INEFFECTIVE, plan.note or "the plan would not raise health")

    def plan_for(self, i: int, lv: LevelSpec, ts_ms: int, budget: float | None) -> Plan:
        """The plan the level's strategy makes for account i at the current prices (never raises)."""
        book = self.engine.books[i]
        h = float(self.engine.health[i])
        request = PlanRequest(book, self.market_view(), lv.name, lv.target, ts_ms,
                              self.account_stable(book.name), budget, lv.params)
        try:
            return self.strategies[lv.strategy].plan(request)
        except Exception as err:  # a strategy's bug must not cost the tick's other events
            return Plan(book.name, lv.name, lv.strategy, ts_ms, h, h,
                        note=f"strategy {lv.strategy} failed: {type(err).__name__}: {err}")

    def abandon(self, plan: Plan) -> None:
        """An executor gave up on a plan: the account may be planned for again."""
        self.rules.release(self.engine.account_index[plan.account])

    # -- fills come back -----------------------------------------------------------------
    def settle(self, plan: Plan, done: Execution, apply: bool = True) -> Settlement:
        """Applies what was executed, recomputes the account exactly, verifies the outcome
        (improved, and not past the target by more than verify_offset, as DeFi automations check).

        apply=False: the venue's own balances will show the fills (an exchange-synced account);
        the action is counted now and `verify` runs on the first sync taken after the fills."""
        i = self.engine.account_index[plan.account]
        before = float(self.engine.health[i])
        if apply:
            self.engine.set_book(apply_execution(self.engine.books[i], done.fills, done.repays, done.transfers,
                                                 self.schedules))
        self.rules.record_action(i, sum(f.notional for f in done.fills))
        self.rules.release(i)
        self._ineffective = {k for k in self._ineffective if k[0] != i}  # a new book: news again
        after = float(self.engine.health[i])
        return Settlement(before, after, self.verify(plan, before, after) if apply else None)

    def verify(self, plan: Plan, before: float, after: float) -> LevelEvent | None:
        """VERIFY_FAILED when health did not improve, or overshot the target by more than verify_offset."""
        i = self.engine.account_index[plan.account]
        target = next((lv.target for lv in self.rules.accounts[i].levels if lv.name == plan.level), None)
        offset = self.settings.execution.verify_offset
        if not after > before:
            return self._event(i, plan.level, EventKind.VERIFY_FAILED, f"health did not improve ({before:.4f} -> {after:.4f})")
        if target is not None and after > target * (1 + offset) and plan.expected_health <= target * (1 + offset):
            return self._event(i, plan.level, EventKind.VERIFY_FAILED, f"overshot the target {target:.4f}: {after:.4f}")
        return None

    def replace_book(self, book: AccountBook) -> list[LevelEvent | Plan]:
        """An account's holdings as its venue reports them: recomputed exactly, then its levels
        evaluated at once (a sync that shows a breach must not wait for the next tick)."""
        i = self.engine.account_index[book.name]
        self.engine.set_book(book)
        self._ineffective = {k for k in self._ineffective if k[0] != i}
        if math.isnan(self.engine.health[i]) or self.start_ms is None:
            return []
        return self._decide(np.array([i], dtype=np.int64))

    def plan_still_helps(self, plan: Plan, fill_price) -> str | None:
        """Why `plan`, filled at `fill_price(order)` on the latest prices, would not raise the
        account's health now (prices moved since it was planned), or None when it still does."""
        i = self.engine.account_index[plan.account]
        now = float(self.engine.health[i])
        fee = self.settings.execution.fee_rate
        fills = [Fill(o, o.amount, (px := fill_price(o)), o.amount * px * fee, self.now_ms) for o in plan.orders]
        book = apply_execution(self.engine.books[i], fills, plan.repays, plan.transfers, self.schedules)
        prices = self.engine.price_map()
        if any(math.isnan(prices.get(a, math.nan)) for a, e in book.exposures.items() if not e.is_empty):
            return "a price the plan needs is unknown"
        after = evaluate(book, prices).health
        if not after > now:
            return f"on the latest prices it would not raise health ({now:.4f} -> {after:.4f})"
        return None

    # -- a config reload ----------------------------------------------------------------
    def carry_over(self, old: Monitor) -> list[LevelEvent | Plan]:
        """Takes over the live state of `old`, the Monitor of the previous config: prices, their
        times and volatility, quotes, event time, and each kept account's rules state. Returns
        what the new levels say now (firing, resolving, acting), as a tick would."""
        market = [a for k, a in enumerate(self.engine.assets) if not self.fixed[k]]
        self.engine.adopt_prices(old.engine, market)
        for asset in market:
            if asset in old.engine.asset_index:
                self.vol.copy_asset(old.vol, old.engine.asset_index[asset], self.engine.asset_index[asset])
        self.quotes = {a: q for a, q in old.quotes.items() if a in self.engine.asset_index}
        self.now_ms, self.start_ms, self.bad_ticks = old.now_ms, old.start_ms, old.bad_ticks
        out: list = self.rules.carry_state(old.rules, old.engine.health, self.now_ms)
        names = [b.name for b in old.engine.books]
        self._ineffective = {(self.engine.account_index[names[i]], lv) for i, lv in old._ineffective
                             if names[i] in self.engine.account_index}
        out += self.check_stale()
        return out + self._decide(np.arange(len(self.engine.books)))

    # -- views --------------------------------------------------------------------------
    def market_view(self) -> MarketView:
        prices = {a: float(p) for a, p in zip(self.engine.assets, self.engine.prices) if not math.isnan(p)}
        vol = {a: v for k, a in enumerate(self.engine.assets) if (v := self.vol.daily(k)) is not None}
        return MarketView(prices, dict(self.quotes), self.markets, self.stables,
                          self.settings.execution.fee_rate, self.settings.execution.slippage, vol)

    def quote(self, asset: str) -> tuple[float, float] | None:
        """(bid, ask) of an asset in valuation units: the feed's, else its price both ways."""
        q = self.quotes.get(asset)
        if q is not None:
            return q
        p = self.engine.price_of(asset)
        return None if math.isnan(p) else (p, p)

    def account_stable(self, name: str) -> str | None:
        acc = self.books_cfg[name]
        if acc.stable:
            return acc.stable
        book = self.engine.books[self.engine.account_index[name]]
        # A stable it holds, else one it owes (proceeds then repay it), else any configured one.
        held = [a for a, e in book.exposures.items() if a in self.stables and e.qty > 0]
        owed = [a for a, e in book.exposures.items() if a in self.stables and e.debt > 0]
        return next(iter(held + owed + sorted(self.stables)), None)

    def status(self, i: int) -> AccountStatus:
        book = self.engine.books[i]
        h = float(self.engine.health[i])
        prices = self.engine.price_map()
        depth = int(self.rules.depth[i])
        levels = self.rules.accounts[i].levels
        exposures = []
        if not math.isnan(h):
            for asset, e in book.exposures.items():
                k = self.engine.asset_index[asset]
                if self.fixed[k] or e.is_empty:
                    continue
                exposures.append(self._exposure(book, prices, asset, k))
        unpriced = tuple(self.engine.unpriced_assets_of(i))
        return AccountStatus(book.name, book.model, h, to_native(book.model, book.param, h) if not math.isnan(h) else math.nan,
                             self.engine.equity_of(i), levels[depth - 1].name if depth else None,
                             bool(self.rules.stale[i]), tuple(exposures), unpriced)

    def _exposure(self, book: AccountBook, prices: dict[str, float], asset: str, k: int) -> ExposureStatus:
        p = prices[asset]
        liq = liquidation_price(book, prices, asset)
        if liq is None or liq <= 0:
            return ExposureStatus(asset, p, None, None, None)
        vol = self.vol.daily(k)
        sigma = abs(math.log(liq / p)) / vol if vol else None
        return ExposureStatus(asset, p, liq, (liq / p - 1) * 100, sigma)

    def account_event(self, account: str, level: str, kind: EventKind, detail: str) -> LevelEvent:
        """An event about `account` at its current health (execution outcomes, for the alerts)."""
        return self._event(self.engine.account_index[account], level, kind, detail)

    def _event(self, i: int, level: str, kind: EventKind, detail: str) -> LevelEvent:
        book = self.engine.books[i]
        h = float(self.engine.health[i])
        return LevelEvent(book.name, level, kind, h, to_native(book.model, book.param, h), self.now_ms,
                          self.rules.dry_run, detail)


def stale_detail(last_seen: dict[str, int]) -> str:
    """"no price for BTC, ETH since start; SOL since 2024-05-01T10:00:00.000Z" (asset -> its last
    price time, -1 for never)."""
    never = [a for a, t in last_seen.items() if t < 0]
    parts = [f"{', '.join(never)} since start"] if never else []
    parts += [f"{a} since {iso_ms(t)}" for a, t in last_seen.items() if t >= 0]
    return "no price for " + "; ".join(parts)


def valid_tick(tick: PriceTick) -> bool:
    """A usable price (positive, finite, and small and large enough not to overflow the engine's
    ratios), and a bid/ask (when given) that is usable and not crossed."""
    if not usable_price(tick.price):  # False for NaN too
        return False
    if tick.bid is None or tick.ask is None:
        return tick.bid is None and tick.ask is None
    return usable_price(tick.bid) and usable_price(tick.ask) and tick.bid <= tick.ask


def check_strategies(monitor: Monitor) -> None:
    problems = monitor.strategy_problems()
    if problems:
        raise ConfigError(problems[0])
