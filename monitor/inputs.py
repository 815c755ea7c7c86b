"""What the commands read: a checked config, price files, times typed on the command line.

One user error in any of them ends in a UserError naming the culprit (one line, exit 2).
"""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.accounts.static import build_books
from monitor.config import Settings, load_settings
from monitor.core import Monitor, check_strategies
from monitor.errors import UserError
from monitor.model import iso_ms


def registry():
    from strategies import default_registry
    return default_registry()


def parse_time(text: str, flag: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{flag}: not an ISO-8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def load_checked(path: str) -> tuple[Settings, Monitor]:
    """Settings plus a built Monitor: every check a config must pass before it runs."""
    settings = load_settings(path)
    monitor = Monitor(settings, registry())
    check_strategies(monitor)
    return settings, monitor


def load_series(settings: Settings, prices: list[str], start_ms: int | None, end_ms: int | None) -> list:
    from monitor.feeds.price_file import load_price_file, parse_prices_arg

    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise UserError(f"--start {iso_ms(start_ms)} is not before --end {iso_ms(end_ms)}: the window is empty")
    known = settings.symbol_of_asset()
    symbols = set(known.values())
    series = []
    for arg in prices:
        symbol, path = parse_prices_arg(arg)
        if symbol not in symbols:
            raise UserError(f"--prices {symbol}: no asset is priced by this symbol (known: {', '.join(sorted(symbols))})")
        s = load_price_file(path, symbol, start_ms, end_ms)
        if not len(s):  # a run over it would report "not liquidated" on no evidence at all
            first, last = s.span_ms
            raise UserError(f"--prices {symbol}: {path} has no tick in the --start/--end window "
                            f"(it covers {iso_ms(first)} to {iso_ms(last)})")
        series.append(s)
    given = {s.symbol for s in series}
    for book in build_books(settings):  # every priced asset an account holds, owes or trades a perp on
        for asset, exposure in book.exposures.items():
            if asset in known and known[asset] not in given and not exposure.is_empty:
                raise UserError(f"--prices: no price file for {known[asset]} (asset {asset}, held by {book.name})")
    return series
