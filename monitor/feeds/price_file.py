"""Historical price files for replay.

One symbol per CSV file, optionally gzipped (detected by magic bytes, not by the
name). Two layouts are understood:

* a header row naming a time column (timestamp, time, date, open_time_ms, open_time;
  case-insensitive) and either a `price` column or `open,high,low,close` columns;
* header-less Binance klines: open time (ms, or µs in newer files), open, high,
  low, close, volume, ...

Candles are expanded to four ticks per bar so a replay sees the intrabar wicks.
Bad rows (unparseable, out of time order, or a price outside 1e-15..1e15, where the
engine's ratios would overflow) are skipped and reported by line number; a file with
nothing usable raises PriceFileError.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np

from monitor.errors import PriceFileError
from monitor.limits import usable_price
from monitor.model import PriceTick

TIME_COLUMNS = ("timestamp", "time", "date", "open_time_ms", "open_time")
CANDLE_COLUMNS = ("open", "high", "low", "close")
DEFAULT_BAR_MS = 60_000  # bar length when a file has a single candle

_GZIP_MAGIC = b"\x1f\x8b"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_SECONDS_BELOW = 1e11  # 1e11 s is year 5138, 1e11 ms is 1973: unambiguous
_MILLIS_BELOW = 1e14  # newer Binance files use µs; 1e14 ms would be year 5138
_BINANCE_MIN_FIELDS = 5  # open time, open, high, low, close
LISTED_BAD_LINES = 20  # line numbers kept per file: enough to find the pattern, bounded for huge files


@dataclass(frozen=True, eq=False)
class PriceSeries:
    """Ticks of one symbol from one file, strictly increasing in time (read-only arrays)."""

    symbol: str
    ts_ms: np.ndarray  # int64
    price: np.ndarray  # float64
    bad_rows: int
    rows: int  # good rows in the whole file, before any start/end filter
    path: str
    bad_lines: tuple[int, ...] = ()  # line numbers of the first LISTED_BAD_LINES bad rows
    span_ms: tuple[int, int] | None = None  # first and last time in the whole file

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass(frozen=True, eq=False)
class MergedTicks:
    """Ticks of several series in one global time order (ties keep the series order)."""

    ts_ms: np.ndarray  # int64
    symbol_index: np.ndarray  # int32, index into `symbols`
    price: np.ndarray  # float64
    symbols: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ts_ms)

    def __iter__(self) -> Iterator[PriceTick]:
        # tolist() turns numpy scalars into plain ints/floats in one pass
        symbols = self.symbols
        for ts, idx, price in zip(self.ts_ms.tolist(), self.symbol_index.tolist(), self.price.tolist()):
            yield PriceTick(symbol=symbols[idx], price=price, ts_ms=ts)


@dataclass(frozen=True)
class _Layout:
    time_col: int
    price_cols: tuple[int, ...]  # (price,) or (open, high, low, close)
    n_fields: int
    has_header: bool

    @property
    def is_candle(self) -> bool:
        return len(self.price_cols) == 4


# ---------------------------------------------------------------- public API


def load_price_file(
    path: str | Path,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> PriceSeries:
    """Load one price file; keep ticks with start_ms <= ts < end_ms (either bound optional)."""
    name = str(path)
    try:
        with _open_text(path) as stream:
            layout, times, columns, bad = _read_rows(stream, name)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # BadGzipFile (a CRC mismatch) before OSError
        raise PriceFileError(f"{name}: corrupt gzip data ({exc or 'truncated'})") from exc
    except OSError as exc:
        raise PriceFileError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PriceFileError(f"{name}: not a UTF-8 text file") from exc
    except csv.Error as exc:
        raise PriceFileError(f"{name}: unreadable CSV: {exc}") from exc
    if not times:
        raise PriceFileError(f"{name}: no valid rows: {describe_bad_rows(len(bad), bad[:LISTED_BAD_LINES])}")
    ts, price = _to_ticks(layout, times, columns)
    span = (int(ts[0]), int(ts[-1]))
    ts, price = _window(ts, price, start_ms, end_ms)
    ts.flags.writeable = False
    price.flags.writeable = False
    return PriceSeries(symbol=symbol, ts_ms=ts, price=price, bad_rows=len(bad), rows=len(times), path=name,
                       bad_lines=tuple(bad[:LISTED_BAD_LINES]), span_ms=span)


def describe_bad_rows(count: int, lines: Sequence[int]) -> str:
    """'3 bad rows (lines 4, 9, 12)'; '...' when there are more than the lines listed."""
    text = f"{count} bad row{'' if count == 1 else 's'}"
    if not lines:
        return text
    more = ", ..." if count > len(lines) else ""
    return f"{text} (line{'' if len(lines) == 1 else 's'} {', '.join(map(str, lines))}{more})"


def merge_series(series: Sequence[PriceSeries]) -> MergedTicks:
    """Merge series into one time-sorted stream; equal times keep the order of `series`.

    Two series of the same symbol (e.g. consecutive months) share one symbol index.
    """
    symbols: list[str] = []
    for s in series:
        if s.symbol not in symbols:
            symbols.append(s.symbol)
    if not series:
        return MergedTicks(_frozen(np.empty(0, np.int64)), _frozen(np.empty(0, np.int32)),
                           _frozen(np.empty(0, np.float64)), ())
    ts = np.concatenate([s.ts_ms for s in series]).astype(np.int64, copy=False)
    price = np.concatenate([s.price for s in series]).astype(np.float64, copy=False)
    index = np.concatenate([np.full(len(s.ts_ms), symbols.index(s.symbol), np.int32) for s in series])
    # a stable sort over the concatenation in list order is what makes ties keep that order
    order = np.argsort(ts, kind="stable")
    return MergedTicks(_frozen(ts[order]), _frozen(index[order]), _frozen(price[order]), tuple(symbols))


def parse_prices_arg(arg: str) -> tuple[str, str]:
    """Split a CLI argument `SYMBOL=FILE` (e.g. `BTC/USDT=data/btc.csv.gz`)."""
    symbol, sep, file = arg.partition("=")  # symbols never contain '=', paths might
    symbol, file = symbol.strip(), file.strip()
    if not sep or not symbol or not file or any(ch.isspace() for ch in symbol):
        raise PriceFileError(f"bad price file argument {arg!r}: expected SYMBOL=FILE, e.g. BTC/USDT=data/btc.csv.gz")
    return symbol, file


# ---------------------------------------------------------------- reading


def _open_text(path: str | Path) -> TextIO:
    with open(path, "rb") as raw:
        magic = raw.read(2)
    # utf-8-sig drops a BOM that spreadsheet exports like to add before the header
    if magic == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


Rows = Iterable[tuple[int, list[str]]]  # (line number, fields)


def _read_rows(stream: TextIO, name: str) -> tuple[_Layout, list[int], list[list[float]], list[int]]:
    reader = csv.reader(stream)
    first = next((row for row in reader if row), None)
    if first is None:
        raise PriceFileError(f"{name}: empty file")
    layout = _detect_layout(first, name)
    rows = _numbered(reader, None if layout.has_header else (reader.line_num, first))
    if layout.is_candle:
        return (layout, *_read_candles(rows, layout))
    return (layout, *_read_prices(rows, layout))


def _numbered(reader, first: tuple[int, list[str]] | None) -> Iterator[tuple[int, list[str]]]:
    if first is not None:
        yield first
    for row in reader:
        yield reader.line_num, row


def _detect_layout(first: list[str], name: str) -> _Layout:
    header = [field.strip().lower() for field in first]
    time_col = next((header.index(c) for c in TIME_COLUMNS if c in header), None)
    if time_col is None:
        if len(first) >= _BINANCE_MIN_FIELDS and _is_number(first[0]):
            return _Layout(0, (1, 2, 3, 4), len(first), has_header=False)
        raise PriceFileError(
            f"{name}: no time column (expected one of {', '.join(TIME_COLUMNS)}, or header-less Binance klines)"
        )
    if all(c in header for c in CANDLE_COLUMNS):
        return _Layout(time_col, tuple(header.index(c) for c in CANDLE_COLUMNS), len(header), True)
    if "price" in header:
        return _Layout(time_col, (header.index("price"),), len(header), True)
    raise PriceFileError(f"{name}: no price column (expected price, or open, high, low, close)")


def _read_candles(rows: Rows, layout: _Layout) -> tuple[list[int], list[list[float]], list[int]]:
    ti, n_fields = layout.time_col, layout.n_fields
    oi, hi, li, ci = layout.price_cols
    times: list[int] = []
    opens: list[float] = []
    highs: list[float] = []
    lows: list[float] = []
    closes: list[float] = []
    bad: list[int] = []
    last = None
    for line, row in rows:
        if not row:
            continue  # a blank line carries no data, so it is not a bad row
        try:
            if len(row) != n_fields:
                raise ValueError
            t = _parse_time(row[ti])
            o, h, lo, c = float(row[oi]), float(row[hi]), float(row[li]), float(row[ci])
        except ValueError:
            bad.append(line)
            continue
        # Comparisons are False for NaN, so NaN fields fail here too. The open may lie outside
        # [low, high]: aggregators (CoinGecko, CoinAPI) open a bar at the previous close.
        if (not (usable_price(lo) and usable_price(h) and usable_price(o) and lo <= c <= h)
                or (last is not None and t <= last)):
            bad.append(line)
            continue
        last = t
        times.append(t)
        opens.append(o)
        highs.append(h)
        lows.append(lo)
        closes.append(c)
    return times, [opens, highs, lows, closes], bad


def _read_prices(rows: Rows, layout: _Layout) -> tuple[list[int], list[list[float]], list[int]]:
    ti, pi, n_fields = layout.time_col, layout.price_cols[0], layout.n_fields
    times: list[int] = []
    prices: list[float] = []
    bad: list[int] = []
    last = None
    for line, row in rows:
        if not row:
            continue
        try:
            if len(row) != n_fields:
                raise ValueError
            t = _parse_time(row[ti])
            p = float(row[pi])
        except ValueError:
            bad.append(line)
            continue
        if not usable_price(p) or (last is not None and t <= last):
            bad.append(line)
            continue
        last = t
        times.append(t)
        prices.append(p)
    return times, [prices], bad


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_time(text: str) -> int:
    """Epoch ms from Unix seconds, ms or µs (by magnitude) or ISO-8601 (naive = UTC)."""
    try:
        value = float(text)
    except ValueError:
        return _parse_iso(text)
    if not math.isfinite(value) or abs(value) >= 1e17:  # beyond year 5000 in µs: not a time
        raise ValueError(text)
    magnitude = abs(value)
    if magnitude < _SECONDS_BELOW:
        return round(value * 1000)
    if magnitude < _MILLIS_BELOW:
        return round(value)
    return round(value / 1000)


def _parse_iso(text: str) -> int:
    stamp = datetime.fromisoformat(text.strip())  # 3.11+: accepts 'Z', offsets, ' ' separator
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return (stamp - _EPOCH) // _ONE_MS  # exact integer arithmetic, no float rounding


# ---------------------------------------------------------------- ticks


def _to_ticks(layout: _Layout, times: list[int], columns: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    t = np.array(times, dtype=np.int64)
    if not layout.is_candle:
        return t, np.array(columns[0], dtype=np.float64)
    o, h, lo, c = (np.array(col, dtype=np.float64) for col in columns)
    return _expand_candles(t, o, h, lo, c)


def _bar_ms(t: np.ndarray) -> int:
    if len(t) < 2:
        return DEFAULT_BAR_MS
    # the median ignores gaps (missing bars) that would inflate a mean
    return max(1, round(float(np.median(np.diff(t)))))


def _expand_candles(
    t: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Four ticks per bar at t, t+d/4, t+d/2, t+3d/4: open, nearer extreme, other extreme, close."""
    d = _bar_ms(t)
    # a bar closer to its successor than d is squeezed so ticks never overtake the next bar
    span = np.minimum(np.diff(t, append=t[-1] + d), d)
    ts = (t[:, None] + (span[:, None] * np.arange(4, dtype=np.int64)) // 4).ravel()
    high_first = np.abs(h - o) < np.abs(lo - o)  # equal distance: low first
    first = np.where(high_first, h, lo)
    second = np.where(high_first, lo, h)
    price = np.column_stack((o, first, second, c)).ravel()
    # bars shorter than 4 ms give equal offsets; keep the latest price per time
    keep = np.append(ts[1:] != ts[:-1], True)
    if keep.all():
        return ts, price
    return ts[keep], price[keep]


def _window(
    ts: np.ndarray, price: np.ndarray, start_ms: int | None, end_ms: int | None
) -> tuple[np.ndarray, np.ndarray]:
    if start_ms is None and end_ms is None:
        return ts, price
    lo = 0 if start_ms is None else int(np.searchsorted(ts, start_ms, side="left"))
    hi = len(ts) if end_ms is None else int(np.searchsorted(ts, end_ms, side="left"))
    hi = max(lo, hi)
    return ts[lo:hi].copy(), price[lo:hi].copy()


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
