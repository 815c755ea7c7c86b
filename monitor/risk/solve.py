"""Closed-form sizing on piecewise-linear functions.

For a trade of size x, every quantity in the account moves linearly in x, and
each asset's weighted value W(qty * price) is linear between tier boundaries.
So the target condition g(x) = scale * N(x) - H * D(x) is piecewise linear,
with breakpoints where a holding crosses a tier boundary, where a debt is fully
repaid or a holding runs out. Evaluating g exactly at the breakpoints and
interpolating inside the one segment where it changes sign gives the exact
root: no stepping, no bisection. The same holds for the price of one asset
(liquidation price), with breakpoints at price = tier boundary / amount for the tiers banded
by value (collateral, borrow or perp maintenance); tiers banded by quantity are linear in price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from monitor.risk.portfolio import AccountBook, exposure_terms, price_kinks


def _grid(breakpoints: Iterable[float], lo: float, hi: float) -> list[float]:
    inner = {float(b) for b in breakpoints if math.isfinite(b) and lo < b < hi}
    return sorted(inner | {lo, hi})


def solve_piecewise_linear(g: Callable[[float], float], breakpoints: Iterable[float],
                           lo: float, hi: float) -> float | None:
    """Smallest x in [lo, hi] with g(x) >= 0, for g linear between consecutive breakpoints.

    Returns None when g < 0 on all of [lo, hi].
    """
    if not (hi >= lo):
        return None
    points = _grid(breakpoints, lo, hi)
    x0, g0 = points[0], g(points[0])
    if g0 >= 0:
        return x0
    for x1 in points[1:]:
        g1 = g(x1)
        if g1 >= 0:
            # g is linear on [x0, x1] and changes sign there: the root is exact.
            root = x0 + (x1 - x0) * (-g0 / (g1 - g0))
            return min(x1, max(x0, root))
        x0, g0 = x1, g1
    return None


def argmax_piecewise(f: Callable[[float], float], breakpoints: Iterable[float], lo: float, hi: float) -> float:
    """Smallest x in [lo, hi] maximizing f, for f monotone between breakpoints.

    A ratio of two functions linear on a segment (health = scale*N/D) is monotone
    there, so its maximum is at a breakpoint or an end.
    """
    best_x, best = lo, f(lo)
    for x in _grid(breakpoints, lo, hi)[1:]:
        fx = f(x)
        if fx > best:
            best_x, best = x, fx
    return best_x


def liquidation_price(book: AccountBook, prices: dict[str, float], asset: str) -> float | None:
    """The price of `asset` alone at which health = 1, nearest the current price.

    g(p) = scale*N(p) - D(p) with the other prices fixed; its sign flips at the
    liquidation price. A net long (weighted holding, long perp) liquidates below
    the current price, a debt or short above; when both sides have a root (an
    account both long and short the asset) the nearer one is returned. If the
    account is already below h = 1 the nearest price that would restore h = 1 is
    returned (so the distance to it is negative). None: this asset alone can
    never liquidate (or rescue) the account, or it only would at a price <= 0.
    """
    e = book.exposures.get(asset)
    p0 = prices[asset]
    if e is None or e.is_empty or not p0 > 0:
        return None
    num = den = 0.0
    for other in book.exposures:
        if other != asset:
            n, d, _ = exposure_terms(book, other, prices[other])
            num, den = num + n, den + d

    def g(p: float) -> float:
        n, d, _ = exposure_terms(book, asset, p)
        return book.scale * (num + n) - (den + d)

    g0 = g(p0)
    if not math.isfinite(g0):
        return None  # another asset has no price yet
    kinks = price_kinks(book, asset)
    sign = 1.0 if g0 >= 0 else -1.0
    below = _root_below(lambda p: -sign * g(p), kinks, p0)
    above = _root_above(lambda p: -sign * g(p), kinks, p0)
    roots = [r for r in (below, above) if r is not None]
    return min(roots, key=lambda r: abs(r - p0)) if roots else None


def _root_below(f: Callable[[float], float], kinks: list[float], p0: float) -> float | None:
    """Largest p in (0, p0] with f(p) >= 0, searching downward from p0."""
    t = solve_piecewise_linear(lambda t: f(p0 - t), [p0 - k for k in kinks], 0.0, p0)
    if t is None:
        return None
    p = p0 - t
    return p if p > 0 else None


def _root_above(f: Callable[[float], float], kinks: list[float], p0: float) -> float | None:
    """Smallest p >= p0 with f(p) >= 0; f is linear beyond the last kink, so that ray is solved directly."""
    last = max([p0, *kinks])
    far = 2.0 * last
    p = solve_piecewise_linear(f, kinks, p0, far)
    if p is not None:
        return p
    f_last, f_far = f(last), f(far)
    slope = (f_far - f_last) / (far - last)
    if slope <= 0:
        return None
    return far - f_far / slope


def uniform_liquidation_shock(book: AccountBook, prices: dict[str, float], assets: Iterable[str]) -> float | None:
    """The move s (a fraction, <= 0) of the prices of `assets` together, each to p * (1 + s),
    at which health reaches 1; the other prices stay.

    g(m) = scale*N - D with those prices scaled by m is piecewise linear in m, with
    breakpoints where an amount crosses a value tier (m = tier low / (amount * p)), so the
    same exact solver applies. 0.0: already at or below h = 1. None: even at zero those
    prices leave the account above h = 1.
    """
    moving = [a for a in assets if a in book.exposures and not book.exposures[a].is_empty]
    if not moving:
        return None
    num = den = 0.0
    for other, e in book.exposures.items():
        if other not in moving and not e.is_empty:
            n, d, _ = exposure_terms(book, other, prices[other])
            num, den = num + n, den + d

    def terms(m: float) -> tuple[float, float]:
        n, d = num, den
        for a in moving:
            na, da, _ = exposure_terms(book, a, prices[a] * m)
            n, d = n + na, d + da
        return n, d

    def g(m: float) -> float:
        n, d = terms(m)
        return book.scale * n - d

    if not math.isfinite(g(1.0)):
        return None
    kinks = [1.0 - p / prices[a] for a in moving for p in price_kinks(book, a)]
    t = solve_piecewise_linear(lambda t: -g(1.0 - t), kinks, 0.0, 1.0)
    if t is None or not terms(1.0 - t)[1] > 0:
        return None  # nothing left to cover (no debt, no margin): health is infinite, never 1
    return -t
