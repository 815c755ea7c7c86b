"""Where a stress test starts from: `--shock ASSET=-30%`, and the prices before the shock
(price files at a time, a snapshot of the configured feeds, or the config's fixed prices)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import numpy as np

from monitor.config import Settings
from monitor.errors import UserError
from monitor.feeds.price_file import PriceSeries
from monitor.model import PriceTick, iso_ms


def parse_shock(text: str, settings: Settings) -> tuple[str, float]:
    """`BTC=-30%` -> ("BTC", -0.30)."""
    asset, sep, value = text.partition("=")
    asset, value = asset.strip(), value.strip()
    if not sep or not asset or not value.endswith("%"):
        raise UserError(f"--shock {text!r}: expected ASSET=PERCENT, e.g. BTC=-30%")
    if asset not in settings.assets:
        raise UserError(f"--shock {text!r}: unknown asset {asset!r} (known: {', '.join(settings.assets)})")
    try:
        move = float(value[:-1]) / 100
    except ValueError:
        raise UserError(f"--shock {text!r}: {value!r} is not a percentage") from None
    if not (-1 < move < math.inf):
        raise UserError(f"--shock {text!r}: a move must be above -100% (a price stays positive)")
    return asset, move


def fixed_prices(settings: Settings) -> dict[str, float]:
    return {n: float(a.price) for n, a in settings.assets.items() if a.symbol is None}


def prices_from_files(settings: Settings, series: Sequence[PriceSeries],
                      at_ms: int | None) -> tuple[dict[str, float], int]:
    """Each file's last price at or before `at_ms` (default: its last row), and the latest such time."""
    by_symbol: dict[str, tuple[int, float]] = {}
    for s in series:
        n = len(s) if at_ms is None else int(np.searchsorted(s.ts_ms, at_ms, side="right"))
        if n == 0:
            raise UserError(f"--at {iso_ms(at_ms)}: {s.path} has no price at or before it")
        t, p = int(s.ts_ms[n - 1]), float(s.price[n - 1])
        if s.symbol not in by_symbol or t > by_symbol[s.symbol][0]:
            by_symbol[s.symbol] = (t, p)
    prices = fixed_prices(settings)
    for name, a in settings.assets.items():
        if a.symbol in by_symbol:
            prices[name] = by_symbol[a.symbol][1]
    return prices, max((t for t, _ in by_symbol.values()), default=at_ms or 0)


def needed_symbols(settings: Settings) -> set[str]:
    from monitor.accounts.static import build_books

    symbols = settings.symbol_of_asset()
    return {symbols[a] for b in build_books(settings) for a, e in b.exposures.items()
            if a in symbols and not e.is_empty}


def prices_from_feeds(settings: Settings, timeout_s: float) -> tuple[dict[str, float], int]:
    """A snapshot: the first price of every symbol an account needs, from the configured feeds."""
    needed = needed_symbols(settings)
    prices = fixed_prices(settings)
    if not needed:
        return prices, 0
    fed = {s for f in settings.feeds for s in f.symbols}
    if needed - fed:
        raise UserError(f"stress: no price for {sorted(needed - fed)[0]}: pass --prices SYMBOL=FILE "
                        "or configure a [[feeds]] section that streams it")
    ticks = asyncio.run(_first_ticks(settings, needed, timeout_s))
    for name, a in settings.assets.items():
        if a.symbol in ticks:
            prices[name] = ticks[a.symbol].price
    return prices, max(t.ts_ms for t in ticks.values())


async def _first_ticks(settings: Settings, needed: set[str], timeout_s: float) -> dict[str, PriceTick]:
    from monitor.wiring import build_feed

    seen: dict[str, PriceTick] = {}
    complete = asyncio.Event()

    def sink(tick: PriceTick) -> None:
        if tick.symbol in needed and tick.symbol not in seen and 0 < tick.price < math.inf:
            seen[tick.symbol] = tick
            if needed <= seen.keys():
                complete.set()

    feeds = [build_feed(f, settings) for f in settings.feeds if needed & set(f.symbols)]
    tasks = [asyncio.create_task(feed.run(sink)) for feed in feeds]
    try:
        await asyncio.wait_for(complete.wait(), timeout_s)
    except TimeoutError:
        missing = sorted(needed - seen.keys())
        raise UserError(f"stress: no price for {', '.join(missing)} from the feeds within {timeout_s:g}s") from None
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return seen
