"""The incremental risk engine.

For each asset we keep a sparse column: the accounts holding it, their exposure
terms and the (N, D, equity) each currently contributes. A tick on asset k
touches only that column: N[idx] += new - old, likewise D and equity, then the
health of those accounts (vectorized). Holdings changes recompute the account
exactly; `resync` recomputes everything, bounding float drift.

Pure numpy: no asyncio, no I/O, no wall clock (time arrives with each tick).
"""

from __future__ import annotations

import math
import numpy as np

from monitor.risk.portfolio import AccountBook, Exposure, contributions, health_of
from monitor.risk.tiers import Tiers

_FIELDS = ("qty", "debt", "perp_size", "perp_cost", "perp_mm")
Schedules = tuple[Tiers, Tiers, Tiers]  # collateral weight, borrow maintenance, perp maintenance


def _priced(schedule: Tiers) -> bool:
    """Whether the schedule kinks with the price (tiered and banded by USD value)."""
    return schedule.unit == "value" and not schedule.is_flat


def _linear_part(schedule: Tiers, amount: np.ndarray) -> np.ndarray:
    """The part of the schedule's USD figure that is proportional to the price: all of it for a
    quantity schedule (price * f(qty)), the first band's rate for a value schedule."""
    if schedule.unit == "qty":
        return np.asarray(schedule.apply(amount), dtype=np.float64) * np.ones_like(amount)
    return schedule.first_rate * amount


def _priced_part(schedule: Tiers, amount: np.ndarray | float, price: float) -> np.ndarray | float:
    """What a value schedule adds beyond its first band's rate at `price`."""
    value = amount * price
    return schedule.apply(value) - schedule.first_rate * value


# The amount each schedule of an entry applies to, and the side of the ratio it adds to.
_KINDS = (("qty", "num"), ("debt", "den"), ("perp_size", "den"))


class _Column:
    """Every account's exposure to one asset, and what each currently contributes.

    Each entry keeps its own schedules. Those linear in price (flat rates, quantity bands) live in
    the entry's coefficients; the tick path visits only the entries under a schedule banded by
    value, one vectorized pass per distinct schedule (`priced`), however varied the others are."""

    def __init__(self, entries: list[tuple[int, Exposure, Schedules, bool]]):
        n = len(entries)
        self.idx = np.fromiter((e[0] for e in entries), dtype=np.int64, count=n)
        self.unified = np.fromiter((e[3] for e in entries), dtype=np.float64, count=n)
        for name in _FIELDS:
            setattr(self, name, np.fromiter((getattr(e[1], name) for e in entries), np.float64, n))
        self.schedules: list[Schedules] = [e[2] for e in entries]
        positions: dict[tuple[int, Tiers], list[int]] = {}
        for pos, sch in enumerate(self.schedules):
            for kind, schedule in enumerate(sch):
                if _priced(schedule):
                    positions.setdefault((kind, schedule), []).append(pos)
        self.priced = {key: np.array(p, dtype=np.int64) for key, p in positions.items()}
        self.where = {int(a): pos for pos, a in enumerate(self.idx)}
        self.num = np.zeros(n)
        self.den = np.zeros(n)
        self.eq = np.zeros(n)
        self.a, self.b, self.e, self.c = (np.zeros(n) for _ in range(4))
        self.refresh_coefficients()

    def __len__(self) -> int:
        return len(self.idx)

    def refresh_coefficients(self, sel: slice | np.ndarray = slice(None)) -> None:
        """Every model is affine in price apart from tiers banded by value, so the tick path needs
        only N = a*p - c (+ tiers), D = b*p (+ tiers), equity = e*p - c. The coefficients come
        from `contributions` itself (its value at price 0 and at price 1 with the schedules'
        linear parts), so the formula still lives in one place."""
        positions = range(len(self.idx)) if isinstance(sel, slice) else sel.tolist()
        by_schedules: dict[Schedules, list[int]] = {}
        for pos in positions:  # one vectorized pass per distinct set of schedules
            by_schedules.setdefault(self.schedules[pos], []).append(pos)
        weighted, maintenance = np.empty(len(self.idx)), np.empty(len(self.idx))
        for (weight, borrow, perp), group in by_schedules.items():
            at = np.array(group, dtype=np.int64)
            weighted[at] = _linear_part(weight, self.qty[at])
            maintenance[at] = (_linear_part(borrow, self.debt[at]) + self.perp_mm[at]
                               + _linear_part(perp, np.abs(self.perp_size[at])))
        args = (self.unified[sel], self.qty[sel], self.debt[sel], self.perp_size[sel], self.perp_cost[sel])
        n0, d0, e0 = contributions(*args, 0.0, 0.0, 0.0)
        n1, d1, e1 = contributions(*args, weighted[sel], maintenance[sel], 1.0)
        self.a[sel], self.b[sel], self.e[sel], self.c[sel] = n1 - n0, d1 - d0, e1 - e0, -n0

    def terms(self, price: float, sel: slice | np.ndarray = slice(None)):
        """(N, D, equity) of the selected entries at `price`."""
        num = self.a[sel] * price - self.c[sel]
        den = self.b[sel] * price
        if isinstance(sel, slice):
            for (kind, schedule), at in self.priced.items():
                field_name, side = _KINDS[kind]
                amount = np.abs(getattr(self, field_name)[at])
                (num if side == "num" else den)[at] += _priced_part(schedule, amount, price)
        else:
            for n, pos in enumerate(np.atleast_1d(sel).tolist()):
                for kind, schedule in enumerate(self.schedules[pos]):
                    if _priced(schedule):
                        field_name, side = _KINDS[kind]
                        part = _priced_part(schedule, abs(getattr(self, field_name)[pos]), price)
                        if side == "num":
                            num[n] += part
                        else:
                            den[n] += part
        return num, den, self.e[sel] * price - self.c[sel]

    # -- one account enters or leaves: array edits, not a rebuild (the first sync of
    # thousands of accounts must not be quadratic) -------------------------------------
    _ARRAYS = ("idx", "unified", *_FIELDS, "num", "den", "eq", "a", "b", "e", "c")

    def without(self, account: int) -> None:
        """Removes the account's entry; every other entry keeps its cached contribution."""
        pos = self.where[account]
        for name in self._ARRAYS:
            setattr(self, name, np.delete(getattr(self, name), pos))
        del self.schedules[pos]
        priced = {}
        for key, at in self.priced.items():
            at = at[at != pos]
            if len(at):
                priced[key] = at - (at > pos)
        self.priced = priced
        self.where = dict(zip(self.idx.tolist(), range(len(self.idx)), strict=True))

    def with_entry(self, account: int, exposure: Exposure, schedules: Schedules, unified: bool) -> None:
        """Adds the account at the end; its contribution is zero until the caller prices it."""
        pos = len(self.idx)
        values = {"idx": account, "unified": float(unified), **{f: getattr(exposure, f) for f in _FIELDS}}
        for name in self._ARRAYS:
            arr = getattr(self, name)
            setattr(self, name, np.append(arr, values.get(name, 0.0)).astype(arr.dtype, copy=False))
        self.schedules.append(schedules)
        for kind, schedule in enumerate(schedules):
            if _priced(schedule):
                at = self.priced.get((kind, schedule))
                self.priced[(kind, schedule)] = np.append(at if at is not None else np.empty(0, np.int64), pos)
        self.where[account] = pos
        self.refresh_coefficients(np.array([pos]))


class RiskEngine:
    """Owns every account's risk state. One task calls it; it needs no locks."""

    def __init__(self, books: list[AccountBook], assets: list[str], fixed_prices: dict[str, float] | None = None):
        self.assets = list(assets)
        self.asset_index = {a: k for k, a in enumerate(self.assets)}
        self.books = list(books)
        self.account_index = {b.name: i for i, b in enumerate(self.books)}
        n, n_assets = len(self.books), len(self.assets)
        self.scale = np.array([b.scale for b in self.books], dtype=np.float64)
        self.prices = np.full(n_assets, np.nan)
        self.last_ts = np.full(n_assets, -1, dtype=np.int64)  # -1: never seen
        self.num = np.zeros(n)
        self.den = np.zeros(n)
        self.equity = np.zeros(n)
        self.health = np.full(n, np.nan)
        # What a venue counts that the model cannot attribute (USD, from the last sync): constant
        # between syncs, so the tick path's increments carry it along untouched.
        self.residual_num = np.array([b.residual_num for b in self.books], dtype=np.float64)
        self.residual_den = np.array([b.residual_den for b in self.books], dtype=np.float64)
        self.missing = np.zeros(n, dtype=np.int64)  # held assets without a price yet
        self._build_columns()
        for asset, price in (fixed_prices or {}).items():
            self.apply(self.asset_index[asset], price, 0)

    # -- construction -----------------------------------------------------------------
    def _build_columns(self) -> None:
        per_asset: list[list] = [[] for _ in self.assets]
        for i, book in enumerate(self.books):
            for asset, exp in book.exposures.items():
                if not exp.is_empty:
                    per_asset[self.asset_index[asset]].append((i, exp, book.schedules(asset), book.unified))
        self.columns = [_Column(entries) for entries in per_asset]
        self.missing[:] = 0
        for k, col in enumerate(self.columns):
            if math.isnan(self.prices[k]):
                np.add.at(self.missing, col.idx, 1)
        self.resync()

    # -- the tick path ------------------------------------------------------------------
    def apply(self, k: int, price: float, ts_ms: int) -> np.ndarray:
        """New price for asset k; returns the indices of the accounts whose health changed."""
        first = math.isnan(self.prices[k])
        self.prices[k] = price
        self.last_ts[k] = ts_ms
        col = self.columns[k]
        if not len(col):
            return col.idx
        num, den, eq = col.terms(price)
        idx = col.idx
        n = self.num[idx] + (num - col.num)
        d = self.den[idx] + (den - col.den)
        self.num[idx] = n
        self.den[idx] = d
        self.equity[idx] += eq - col.eq
        col.num, col.den, col.eq = num, den, eq
        if first:
            self.missing[idx] -= 1
        self._refresh_health(idx, n, d)
        return idx

    def _refresh_health(self, idx: np.ndarray, num: np.ndarray | None = None, den: np.ndarray | None = None) -> None:
        if num is None:
            num, den = self.num[idx], self.den[idx]
        h = health_of(1.0, num, den) * self.scale[idx]
        unpriced = self.missing[idx] > 0
        if unpriced.any():
            h[unpriced] = np.nan
        self.health[idx] = h

    # -- exact recomputation ------------------------------------------------------------
    def resync(self) -> None:
        """Recompute every contribution and sum exactly (also the periodic drift bound)."""
        self.num[:] = self.residual_num
        self.den[:] = self.residual_den
        self.equity[:] = 0.0
        for k, col in enumerate(self.columns):
            if not len(col):
                continue
            if math.isnan(self.prices[k]):
                col.num[:] = col.den[:] = col.eq[:] = 0.0
                continue
            col.num, col.den, col.eq = col.terms(self.prices[k])
            np.add.at(self.num, col.idx, col.num)
            np.add.at(self.den, col.idx, col.den)
            np.add.at(self.equity, col.idx, col.eq)
        self._refresh_health(np.arange(len(self.books)))

    def adopt_prices(self, old: RiskEngine, assets: list[str]) -> None:
        """Carries `old`'s market state (last price and its time) for `assets` into this engine,
        then recomputes every account exactly. A config reload builds a new engine from the new
        books and keeps what the feeds already said."""
        for asset in assets:
            j = old.asset_index.get(asset)
            if j is not None and asset in self.asset_index:
                k = self.asset_index[asset]
                self.prices[k], self.last_ts[k] = old.prices[j], old.last_ts[j]
        self._build_columns()  # the unpriced counts and every sum, from the carried prices

    def set_book(self, book: AccountBook) -> None:
        """Replace one account's book (a fill, an account sync, a changed model or its parameter)
        and recompute it exactly."""
        i = self.account_index[book.name]
        old = self.books[i]
        self.books[i] = book
        self.scale[i] = book.scale
        self.residual_num[i], self.residual_den[i] = book.residual_num, book.residual_den
        held = {a for a, e in book.exposures.items() if not e.is_empty}
        was = {a for a, e in old.exposures.items() if not e.is_empty}
        # Columns the account enters, leaves, or whose schedule or model flag changed are rebuilt; only those.
        changed = {a for a in held & was if book.schedules(a) != old.schedules(a) or book.unified != old.unified}
        for asset in (held ^ was) | changed:
            self._rebuild_column(self.asset_index[asset], i, book)
        for asset in held:
            k = self.asset_index[asset]
            col = self.columns[k]
            pos = col.where[i]
            for name in _FIELDS:
                getattr(col, name)[pos] = getattr(book.exposures[asset], name)
            col.refresh_coefficients(np.array([pos]))
            if not math.isnan(self.prices[k]):
                n, d, e = col.terms(self.prices[k], np.array([pos]))
                col.num[pos], col.den[pos], col.eq[pos] = n[0], d[0], e[0]
        self._resum_account(i, held)

    def _rebuild_column(self, k: int, i: int, book: AccountBook) -> None:
        """Column k with account i's entry replaced, added or removed; other entries keep
        their cached contributions, so the other accounts' sums stay exactly as they were."""
        col = self.columns[k]
        asset = self.assets[k]
        exp = book.exposures.get(asset)
        had, has = i in col.where, exp is not None and not exp.is_empty
        if had:
            col.without(i)
        if has:
            col.with_entry(i, exp, book.schedules(asset), book.unified)
        if math.isnan(self.prices[k]) and had != has:
            self.missing[i] += 1 if has else -1

    def _resum_account(self, i: int, held: set[str]) -> None:
        num, den, eq = float(self.residual_num[i]), float(self.residual_den[i]), 0.0
        for asset in held:
            col = self.columns[self.asset_index[asset]]
            pos = col.where[i]
            num += col.num[pos]
            den += col.den[pos]
            eq += col.eq[pos]
        self.num[i], self.den[i], self.equity[i] = num, den, eq
        self._refresh_health(np.array([i]))

    # -- views --------------------------------------------------------------------------
    def price_of(self, asset: str) -> float:
        return float(self.prices[self.asset_index[asset]])

    def equity_of(self, i: int) -> float:
        """Account i's equity; NaN while a held asset has no price (never the sum without it)."""
        return math.nan if self.missing[i] else float(self.equity[i])

    def unpriced_assets_of(self, i: int) -> list[str]:
        """Held assets that never had a price."""
        if not self.missing[i]:
            return []
        return [a for a, e in self.books[i].exposures.items()
                if not e.is_empty and math.isnan(self.prices[self.asset_index[a]])]

    def price_map(self) -> dict[str, float]:
        return {a: float(p) for a, p in zip(self.assets, self.prices)}

    def _seen(self, since_ms: int | None) -> np.ndarray:
        """Last tick time per asset; an asset never seen counts as seen at `since_ms` (start-up
        grace), or as infinitely old when since_ms is None."""
        if since_ms is None:
            return np.where(self.last_ts < 0, np.iinfo(np.int64).min // 2, self.last_ts)
        return np.where(self.last_ts < 0, since_ms, self.last_ts)

    def stale_accounts(self, now_ms: int, stale_after_ms: np.ndarray, fixed: np.ndarray,
                       since_ms: int | None = None) -> np.ndarray:
        """Boolean mask of accounts holding a non-fixed asset not priced within their stale_after_ms."""
        age = now_ms - self._seen(since_ms)
        stale = np.zeros(len(self.books), dtype=bool)
        floor = stale_after_ms.min() if len(stale_after_ms) else 0
        for k, col in enumerate(self.columns):
            # An asset younger than the shortest stale_after is stale for nobody: skip its column.
            if len(col) and not fixed[k] and age[k] > floor:
                stale[col.idx] |= age[k] > stale_after_ms[col.idx]
        return stale

    def stale_assets_of(self, i: int, now_ms: int, stale_after_ms: float, fixed: np.ndarray,
                        since_ms: int | None = None) -> list[str]:
        age = now_ms - self._seen(since_ms)
        out = []
        for asset, e in self.books[i].exposures.items():
            k = self.asset_index[asset]
            if not e.is_empty and not fixed[k] and age[k] > stale_after_ms:
                out.append(asset)
        return out
