"""Levels -> events: hysteresis, confirmation, cooldown, daily caps, staleness.

Breach depth is computed vectorized for the accounts a tick touched; only
accounts whose depth changed, or whose timer (confirmation, cooldown) is due,
reach the per-account Python logic. Time is event time (tick timestamps), so a
replay behaves exactly like the live daemon, only faster.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace

import numpy as np

from monitor.config import AccountSettings
from monitor.errors import ConfigError
from monitor.model import EventKind, LevelEvent
from monitor.risk.portfolio import from_native, to_native

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class LevelSpec:
    name: str
    action: str  # alert | rebalance
    threshold: float  # health below which the level is breached
    clear: float  # health above which it clears (threshold plus hysteresis)
    confirm_ms: int
    cooldown_ms: int
    target: float | None = None  # health to restore (rebalance)
    strategy: str | None = None
    params: dict = field(default_factory=dict)
    max_notional: float | None = None


@dataclass(frozen=True, slots=True)
class AccountRules:
    name: str
    model: str
    param: float
    levels: tuple[LevelSpec, ...]  # by threshold, highest first
    stale_after_ms: int
    max_actions_per_day: int
    max_notional_per_day: float | None


def build_account_rules(acc: AccountSettings, param: float) -> AccountRules:
    """Converts native-unit levels to health and orders them; rejects levels that cannot work."""
    specs = []
    for lv in acc.levels:
        threshold = getattr(lv, lv.threshold_key)
        if lv.threshold_key != "health":  # a level written as health needs no conversion
            threshold = from_native(acc.model, param, threshold)
        tk = lv.target_key
        target = from_native(acc.model, param, getattr(lv, tk)) if tk and tk != "target" else lv.target
        if target is not None and target <= threshold:
            raise ConfigError(
                f"accounts ({acc.name}).levels ({lv.name}): the target (health {target:.4g}) must be above "
                f"the level (health {threshold:.4g}), or an action could never clear it"
            )
        specs.append(LevelSpec(
            lv.name, lv.action, threshold, threshold * (1 + lv.hysteresis), int(lv.confirm_s * 1000),
            int(lv.cooldown_s * 1000), target, lv.strategy, dict(lv.params), lv.max_notional,
        ))
    specs.sort(key=lambda s: -s.threshold)
    # Breach depth is one number per account, so clear lines must keep the thresholds' order.
    for upper, lower in zip(specs, specs[1:]):
        if lower.clear > upper.clear:
            raise ConfigError(f"accounts ({acc.name}).levels ({lower.name}): its hysteresis clears it above "
                              f"level {upper.name!r} clears (health {lower.clear:.4g} > {upper.clear:.4g}); "
                              "use a smaller hysteresis")
    return AccountRules(acc.name, acc.model, param, tuple(specs), int(acc.stale_after_s * 1000),
                        acc.max_actions_per_day, acc.max_notional_per_day)


@dataclass(frozen=True, slots=True)
class RebalanceRequest:
    account: int  # engine index
    level: LevelSpec
    ts_ms: int
    notional_budget: float | None  # what the daily notional cap still allows


@dataclass(slots=True)
class _AccountState:
    pending_since: dict[int, int] = field(default_factory=dict)  # level -> breach start, awaiting confirmation
    firing_since: dict[int, int] = field(default_factory=dict)  # level -> when it fired
    last_action_ms: int | None = None
    day: int = -1
    actions_today: int = 0
    notional_today: float = 0.0
    capped_notified: bool = False
    stale: bool = False
    in_flight: bool = False  # a request is being planned or executed


class Rules:
    def __init__(self, accounts: list[AccountRules], dry_run: bool = True):
        self.accounts = accounts
        self.dry_run = dry_run
        n = len(accounts)
        width = max((len(a.levels) for a in accounts), default=0) or 1
        # Padding thresholds with -inf: a missing level is never breached.
        self.thresholds = np.full((n, width), -np.inf)
        self.clears = np.full((n, width), -np.inf)
        for i, acc in enumerate(accounts):
            for j, lv in enumerate(acc.levels):
                self.thresholds[i, j] = lv.threshold
                self.clears[i, j] = lv.clear
        self.depth = np.zeros(n, dtype=np.int64)  # how many levels are breached (with hysteresis)
        self.entered = np.zeros(n, dtype=np.int64)  # how many thresholds health is below (no hysteresis)
        self.min_health = np.full(n, np.inf)  # lowest health since the account's first level fired
        self.state = [_AccountState() for _ in accounts]
        self.stale_after_ms = np.array([a.stale_after_ms for a in accounts], dtype=np.float64)
        self.stale = np.zeros(n, dtype=bool)
        # Above its loosest clear line an account can be at no level: the tick path skips it.
        self.top_clear = self.clears.max(axis=1)
        # One contiguous array per level: 1-D gathers are much cheaper than a 2-D compare.
        self._threshold_cols = [np.ascontiguousarray(self.thresholds[:, j]) for j in range(width)]
        self._clear_cols = [np.ascontiguousarray(self.clears[:, j]) for j in range(width)]
        self._timers: list[tuple[int, int]] = []  # (due_ms, account), a heap
        self._queued: set[tuple[int, int]] = set()  # what is in the heap: each timer once

    def retarget(self, i: int, acc: AccountRules) -> None:
        """Account i's same levels at a moved liquidation point (the venue's: the native thresholds
        mean other health); its state stays, and the next evaluate() settles its depth."""
        if [lv.name for lv in acc.levels] != [lv.name for lv in self.accounts[i].levels]:
            raise ConfigError(f"accounts ({acc.name}): its levels change order at liquidation level {acc.param:g}")
        self.accounts[i] = acc
        for j, lv in enumerate(acc.levels):
            self.thresholds[i, j] = self._threshold_cols[j][i] = lv.threshold
            self.clears[i, j] = self._clear_cols[j][i] = lv.clear
        self.top_clear[i] = self.clears[i].max()
        self.entered[i] = -1  # differs from any count: the next evaluate() looks at this account

    def _schedule(self, due_ms: int, i: int) -> None:
        key = (due_ms, i)
        if key not in self._queued:
            self._queued.add(key)
            heapq.heappush(self._timers, key)

    # -- the tick path ----------------------------------------------------------------
    def evaluate(self, idx: np.ndarray, health: np.ndarray, now_ms: int) -> list:
        """New health for accounts `idx`: returns LevelEvents and RebalanceRequests."""
        h = health[idx]
        old = self.depth[idx]
        # Only accounts below their loosest clear line, or already at a level, can change
        # (entered <= depth, so depth 0 above every line stays 0). Unknown health is skipped.
        cand = (h < self.top_clear[idx]) | ((old > 0) & ~np.isnan(h))
        idx, h, old = idx[cand], h[cand], old[cand]
        old_enter = self.entered[idx]
        enter = np.zeros(len(idx), dtype=np.int64)
        stay = np.zeros(len(idx), dtype=np.int64)
        for thresholds, clears in zip(self._threshold_cols, self._clear_cols):
            enter += h < thresholds[idx]
            stay += h < clears[idx]
        new = np.maximum(enter, np.minimum(old, stay))
        self.depth[idx] = new
        self.entered[idx] = enter
        tracked = new > 0
        self.min_health[idx[tracked]] = np.minimum(self.min_health[idx[tracked]], h[tracked])
        out: list = []
        # A threshold crossed inside the hysteresis band changes no depth but ends (or
        # restarts) a breach awaiting confirmation, so it reaches _transition too.
        for i in idx[(new != old) | (enter != old_enter)].tolist():
            self._transition(i, float(health[i]), now_ms, out)
        while self._timers and self._timers[0][0] <= now_ms:
            key = heapq.heappop(self._timers)
            self._queued.discard(key)
            self._transition(key[1], float(health[key[1]]), now_ms, out)
        return out

    def _transition(self, i: int, h: float, now_ms: int, out: list) -> None:
        if math.isnan(h):
            return
        acc, st, depth = self.accounts[i], self.state[i], int(self.depth[i])
        act = None
        for j, lv in enumerate(acc.levels):
            breached = j < depth
            if not breached:
                st.pending_since.pop(j, None)
                if j in st.firing_since:
                    since = st.firing_since.pop(j)
                    out.append(self._event(i, lv, EventKind.RESOLVED, h, now_ms,
                                           min_health=float(self.min_health[i]), since_ms=since))
                continue
            if j not in st.firing_since:
                if not h < lv.threshold:  # back above before confirmation: the wick is over
                    st.pending_since.pop(j, None)
                    continue
                start = st.pending_since.setdefault(j, now_ms)
                if now_ms - start < lv.confirm_ms:
                    self._schedule(start + lv.confirm_ms, i)
                    continue
                del st.pending_since[j]
                st.firing_since[j] = now_ms
                out.append(self._event(i, lv, EventKind.FIRING, h, now_ms))
            if lv.action == "rebalance" and h < lv.threshold:
                act = lv  # levels run shallow to deep: the deepest breached one acts
        if act is not None:  # one request per account (one plan to one target), not one per level
            self._maybe_act(i, act, h, now_ms, out)
        if not st.firing_since:
            self.min_health[i] = np.inf

    def _maybe_act(self, i: int, lv: LevelSpec, h: float, now_ms: int, out: list) -> None:
        acc, st = self.accounts[i], self.state[i]
        if st.stale or st.in_flight:
            return  # stale prices never trade; a plan in flight is never planned again
        if st.day != now_ms // DAY_MS:
            st.day, st.actions_today, st.notional_today = now_ms // DAY_MS, 0, 0.0
            st.capped_notified = False  # a new day: a cap reached again is news again
        if st.last_action_ms is not None and now_ms - st.last_action_ms < lv.cooldown_ms:
            self._schedule(st.last_action_ms + lv.cooldown_ms, i)
            return
        budget = None
        if acc.max_notional_per_day is not None:
            budget = acc.max_notional_per_day - st.notional_today
        if st.actions_today >= acc.max_actions_per_day or (budget is not None and budget <= 0):
            if not st.capped_notified:
                st.capped_notified = True
                out.append(self._event(i, lv, EventKind.CAPPED, h, now_ms, detail="daily action or notional cap reached"))
            self._schedule((st.day + 1) * DAY_MS, i)
            return
        if lv.max_notional is not None:
            budget = lv.max_notional if budget is None else min(budget, lv.max_notional)
        st.last_action_ms = now_ms  # holds further requests until the cooldown, even if the plan is empty
        # Strictly later: a timer due now would pop in this same evaluate and, with
        # cooldown 0, request again forever.
        self._schedule(now_ms + max(lv.cooldown_ms, 1), i)
        st.in_flight = True
        out.append(RebalanceRequest(i, lv, now_ms, budget))

    def release(self, i: int) -> None:
        """The account's last request is done with (settled, found ineffective, or abandoned)."""
        self.state[i].in_flight = False
        self._schedule(self.state[i].last_action_ms or 0, i)  # re-evaluate: still breached?

    def record_action(self, i: int, notional: float) -> None:
        """Counts an executed action against the account's daily caps."""
        st = self.state[i]
        st.actions_today += 1
        st.notional_today += notional
        st.capped_notified = False

    # -- a config reload ----------------------------------------------------------------
    def carry_state(self, old: Rules, old_health: np.ndarray, now_ms: int) -> list[LevelEvent]:
        """Takes over `old`'s state for every account kept (by name): breaches firing or awaiting
        confirmation (levels matched by name), timers, cooldown, daily counts, staleness and the
        plan in flight. A firing level or account that the new config drops resolves. The next
        evaluate() of these accounts settles their depth against the new thresholds."""
        out: list[LevelEvent] = []
        kept: dict[int, int] = {}  # old index -> new index
        where = {a.name: j for j, a in enumerate(old.accounts)}
        for i, acc in enumerate(self.accounts):
            j = where.get(acc.name)
            if j is None:
                continue
            kept[j] = i
            o = old.state[j]
            position = {lv.name: n for n, lv in enumerate(acc.levels)}
            old_names = [lv.name for lv in old.accounts[j].levels]
            renumber = {n: position[name] for n, name in enumerate(old_names) if name in position}
            self.state[i] = replace(o, pending_since={renumber[n]: t for n, t in o.pending_since.items() if n in renumber},
                                    firing_since={renumber[n]: t for n, t in o.firing_since.items() if n in renumber})
            self.stale[i], self.min_health[i] = old.stale[j], old.min_health[j]
            breached = self.state[i].firing_since.keys() | self.state[i].pending_since.keys()
            self.depth[i] = max(breached, default=-1) + 1
            self.entered[i] = -1  # differs from any count: the next evaluate() looks at this account
            gone = [n for n in o.firing_since if n not in renumber]
            out += old._resolve_dropped(j, gone, float(old_health[j]), now_ms, "level removed from the config")
        for j in range(len(old.accounts)):
            if j not in kept:
                out += old._resolve_dropped(j, list(old.state[j].firing_since), float(old_health[j]), now_ms,
                                            "account removed from the config")
        for due, j in old._timers:
            if j in kept:
                self._schedule(due, kept[j])
        return out

    def _resolve_dropped(self, j: int, levels: list[int], h: float, now_ms: int, why: str) -> list[LevelEvent]:
        acc = self.accounts[j]
        return [self._event(j, acc.levels[n], EventKind.RESOLVED, h, now_ms, min_health=float(self.min_health[j]),
                            since_ms=self.state[j].firing_since[n], detail=why) for n in levels]

    # -- staleness ----------------------------------------------------------------------
    def update_stale(self, mask: np.ndarray, health: np.ndarray, now_ms: int, assets_of) -> list[LevelEvent]:
        """Accounts whose prices went stale or fresh since the last call. `assets_of(i)` names the stale
        ones, when they went stale (the STALE event's time; None: now) and the alert's detail."""
        out = []
        for i in np.flatnonzero(mask != self.stale).tolist():
            st = self.state[i]
            st.stale = self.stale[i] = bool(mask[i])
            kind = EventKind.STALE if st.stale else EventKind.FRESH
            stale_assets, when, detail = assets_of(i) if st.stale else ((), None, "prices fresh again")
            out.append(self._event(i, None, kind, float(health[i]), now_ms if when is None else when, detail=detail,
                                   stale_assets=tuple(stale_assets)))
            if not st.stale:
                self._schedule(now_ms, i)  # re-evaluate held-back actions
        return out

    def _event(self, i: int, lv: LevelSpec | None, kind: EventKind, h: float, now_ms: int, **kw) -> LevelEvent:
        acc = self.accounts[i]
        native = to_native(acc.model, acc.param, h) if not math.isnan(h) else math.nan
        return LevelEvent(acc.name, lv.name if lv else "stale", kind, h, native, now_ms, self.dry_run, **kw)
