"""Price files for replay: real data from shared/data plus small hand-written files."""

from __future__ import annotations

import csv
import gzip
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from monitor.errors import PriceFileError, UserError
from monitor.feeds.price_file import (
    MergedTicks,
    PriceSeries,
    describe_bad_rows,
    load_price_file,
    merge_series,
    parse_prices_arg,
)
from monitor.model import PriceTick

BTC_2021 = "binance_1m_2021-04/binance_BTCUSDT_1m_2021-04-16_2021-04-19.csv.gz"
ETH_2021 = "binance_1m_2021-04/binance_ETHUSDT_1m_2021-04-16_2021-04-19.csv.gz"
ETH_10M = "eth_10m/ETHUSD_10m_2020-03-12.csv.gz"
USDE = "usde_depeg_2025-10/binance_USDEUSDT_1m_2025-10-08_2025-10-14.csv.gz"
COINGECKO = "usdc_depeg_2023-03/coingecko_USDCUSD_15m_2023-03-09_2023-03-19.csv.gz"
BINANCEUS_30K = "usdc_depeg_2023-03/binanceus_BTCUSDT_1m_2023-03-01_2023-03-21.csv.gz"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def read_bars(path: Path) -> list[tuple[int, float, float, float, float]]:
    """The file's bars read independently of the loader: (t, open, high, low, close)."""
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert header[:5] == ["open_time_ms", "open", "high", "low", "close"]
        return [(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in reader]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_strictly_increasing(series: PriceSeries) -> None:
    assert np.all(np.diff(series.ts_ms) > 0)


# ---------------------------------------------------------------- real data


def test_binance_btc_1m_four_ticks_per_bar(shared_data: Path) -> None:
    path = shared_data / BTC_2021
    bars = read_bars(path)
    s = load_price_file(path, "BTC/USDT")
    assert (s.symbol, s.rows, s.bad_rows, s.path) == ("BTC/USDT", len(bars), 0, str(path))
    assert len(s) == 4 * len(bars) == 4 * 5760
    assert s.ts_ms.dtype == np.int64 and s.price.dtype == np.float64
    assert_strictly_increasing(s)
    times = np.array([b[0] for b in bars])
    assert np.array_equal(s.ts_ms[0::4], times)
    for k, offset in enumerate((0, 15_000, 30_000, 45_000)):
        assert np.array_equal(s.ts_ms[k::4] - times, np.full(len(bars), offset))
    assert np.array_equal(s.price[0::4], [b[1] for b in bars])  # opens
    assert np.array_equal(s.price[3::4], [b[4] for b in bars])  # closes
    assert s.price.min() == min(b[3] for b in bars)
    assert s.price.max() == max(b[2] for b in bars)


def test_binance_btc_crash_minimum_on_2021_04_18(shared_data: Path) -> None:
    path = shared_data / BTC_2021
    bars = read_bars(path)
    low_bar = min(bars, key=lambda b: b[3])
    s = load_price_file(path, "BTC/USDT")
    i = int(np.argmin(s.price))
    assert s.price[i] == low_bar[3] == 50931.3
    assert low_bar[0] <= s.ts_ms[i] < low_bar[0] + 60_000
    assert ms("2021-04-18T03:00") <= s.ts_ms[i] < ms("2021-04-18T04:00")


def test_candle_extremes_ordered_by_distance_from_open(shared_data: Path) -> None:
    path = shared_data / BTC_2021
    s = load_price_file(path, "BTC/USDT")
    ticks = s.price.reshape(-1, 4)
    for (_, o, h, lo, c), row in zip(read_bars(path), ticks):
        nearer, farther = (h, lo) if abs(h - o) < abs(lo - o) else (lo, h)
        assert tuple(row) == (o, nearer, farther, c)


def test_eth_10m_with_trades_column(shared_data: Path) -> None:
    path = shared_data / ETH_10M
    bars = read_bars(path)
    s = load_price_file(path, "ETH/USD")
    assert (s.rows, s.bad_rows, len(s)) == (144, 0, 576)
    assert_strictly_increasing(s)
    assert np.array_equal(np.unique(s.ts_ms - np.repeat(s.ts_ms[0::4], 4)), [0, 150_000, 300_000, 450_000])
    assert s.price.min() == min(b[3] for b in bars) == 101.01
    assert s.ts_ms[0] == ms("2020-03-12T00:00")


def test_usde_depeg(shared_data: Path) -> None:
    path = shared_data / USDE
    bars = read_bars(path)
    s = load_price_file(path, "USDE/USDT")
    assert (s.rows, s.bad_rows) == (10080, 0)
    assert_strictly_increasing(s)
    i = int(np.argmin(s.price))
    assert s.price[i] == min(b[3] for b in bars) == 0.65
    assert ms("2025-10-10T21:54") <= s.ts_ms[i] < ms("2025-10-10T21:55")


def test_coingecko_15m_with_gaps(shared_data: Path) -> None:
    path = shared_data / COINGECKO
    bars = read_bars(path)
    # CoinGecko bars take the previous close as open, often outside the bar's own high/low:
    # such an open is still a real price, so those bars are kept
    open_outside = sum(1 for _, o, h, lo, c in bars if not lo <= o <= h)
    s = load_price_file(path, "USDC/USD")
    assert open_outside > 0
    assert (s.rows, s.bad_rows) == (len(bars), 0)
    assert_strictly_increasing(s)
    bar_times = s.ts_ms[0::4]
    assert np.diff(bar_times).max() > 900_000  # gaps remain gaps
    # the bar length is the median spacing (15 min), not inflated by the gaps
    assert np.array_equal(np.unique(s.ts_ms - np.repeat(bar_times, 4)), [0, 225_000, 450_000, 675_000])
    assert s.price.min() == 0.899417794194857
    assert ms("2023-03-11T08:30") <= s.ts_ms[int(np.argmin(s.price))] < ms("2023-03-11T08:45")


def test_start_end_filter(shared_data: Path) -> None:
    path = shared_data / BTC_2021
    full = load_price_file(path, "BTC/USDT")
    start, end = ms("2021-04-18T03:00"), ms("2021-04-18T03:10")
    s = load_price_file(path, "BTC/USDT", start_ms=start, end_ms=end)
    assert len(s) == 40 and s.ts_ms[0] == start and s.ts_ms[-1] == end - 15_000
    assert s.rows == full.rows  # rows counts the whole file
    inside = (full.ts_ms >= start) & (full.ts_ms < end)
    assert np.array_equal(s.price, full.price[inside])
    # end is exclusive even when it falls on a tick inside a bar
    assert load_price_file(path, "BTC/USDT", start_ms=start, end_ms=start + 15_000).ts_ms.tolist() == [start]
    assert len(load_price_file(path, "BTC/USDT", start_ms=start + 1, end_ms=start + 15_000)) == 0
    assert load_price_file(path, "BTC/USDT", end_ms=full.ts_ms[1]).ts_ms.tolist() == [full.ts_ms[0]]
    assert load_price_file(path, "BTC/USDT", start_ms=full.ts_ms[-1]).ts_ms.tolist() == [full.ts_ms[-1]]


def test_30k_row_gzip_loads_fast(shared_data: Path) -> None:
    path = shared_data / BINANCEUS_30K
    began = time.perf_counter()
    s = load_price_file(path, "BTC/USDT")
    elapsed = time.perf_counter() - began
    assert s.rows == 30240
    assert elapsed < 1.0, f"took {elapsed:.2f}s"


def test_series_arrays_are_read_only(shared_data: Path) -> None:
    s = load_price_file(shared_data / ETH_10M, "ETH/USD")
    with pytest.raises(ValueError):
        s.price[0] = 1.0


# ---------------------------------------------------------------- formats


def test_gzip_detected_by_magic_not_extension(shared_data: Path, tmp_path: Path) -> None:
    original = shared_data / ETH_10M
    plain_named_gz = tmp_path / "plain.csv.gz"
    plain_named_gz.write_bytes(gzip.decompress(original.read_bytes()))
    gzipped_named_csv = tmp_path / "zipped.csv"
    shutil.copyfile(original, gzipped_named_csv)
    expected = load_price_file(original, "ETH/USD")
    for path in (plain_named_gz, gzipped_named_csv):
        s = load_price_file(path, "ETH/USD")
        assert np.array_equal(s.ts_ms, expected.ts_ms) and np.array_equal(s.price, expected.price)


def test_iso_times_with_price_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "iso.csv",
        "\ufeffDate,Price,Note\n"  # BOM, capitalised names, an extra column
        "2021-04-18,100,a\n"
        "2021-04-18T00:00:01Z,101.5,b\n"
        "2021-04-18T00:00:02.250Z,102,c\n"
        "2021-04-18 00:00:03,103,d\n"
        "2021-04-18T02:00:04+02:00,104,e\n"
        "2021-04-17T19:00:05-05:00,105,f\n",
    )
    s = load_price_file(path, "X")
    base = ms("2021-04-18T00:00")
    assert s.ts_ms.tolist() == [base, base + 1000, base + 2250, base + 3000, base + 4000, base + 5000]
    assert s.price.tolist() == [100, 101.5, 102, 103, 104, 105]
    assert (s.rows, s.bad_rows) == (6, 0)


def test_unix_seconds_and_milliseconds(tmp_path: Path) -> None:
    t0 = ms("2021-04-18T00:00")
    seconds = write(tmp_path / "s.csv", f"time,price\n{t0 // 1000},1\n{t0 // 1000 + 1}.5,2\n{t0 // 1000 + 3},3\n")
    assert load_price_file(seconds, "X").ts_ms.tolist() == [t0, t0 + 1500, t0 + 3000]
    millis = write(tmp_path / "ms.csv", f"TIMESTAMP,price\n{t0},1\n{t0 + 1},2\n")
    assert load_price_file(millis, "X").ts_ms.tolist() == [t0, t0 + 1]
    # the unit is decided per value
    mixed = write(tmp_path / "mixed.csv", f"timestamp,price\n{t0 // 1000},1\n{t0 + 500},2\n")
    assert load_price_file(mixed, "X").ts_ms.tolist() == [t0, t0 + 500]


def test_header_candles_case_insensitive_with_extra_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        "Open_Time,Volume,Close,Low,High,Open,Trades\n"
        "1618704000000,5,10.5,9,10.8,10,3\n"  # high is nearer the open: high comes first
        "1618704060000,5,10,9.5,12,10.4,3\n",  # low nearer
    )
    s = load_price_file(path, "X")
    t = 1618704000000
    assert s.ts_ms.tolist() == [t, t + 15_000, t + 30_000, t + 45_000, t + 60_000, t + 75_000, t + 90_000, t + 105_000]
    assert s.price.tolist() == [10, 10.8, 9, 10.5, 10.4, 9.5, 12, 10]


def test_single_candle_uses_one_minute_bar(tmp_path: Path) -> None:
    s = load_price_file(write(tmp_path / "one.csv", "time,open,high,low,close\n0,2,3,1,2\n"), "X")
    assert s.ts_ms.tolist() == [0, 15_000, 30_000, 45_000]
    assert s.price.tolist() == [2, 1, 3, 2]  # equal distance: low first


def test_short_bar_does_not_overtake_the_next(tmp_path: Path) -> None:
    # 1-minute bars with one bar only 20 s before its successor
    s = load_price_file(
        write(tmp_path / "irr.csv", "time,open,high,low,close\n0,1,1,1,1\n60,1,1,1,1\n80,1,1,1,1\n140,1,1,1,1\n"), "X"
    )
    assert s.ts_ms.tolist()[4:9] == [60_000, 65_000, 70_000, 75_000, 80_000]
    assert_strictly_increasing(s)


def test_headerless_binance_klines_ms_and_us(tmp_path: Path) -> None:
    t = 1618704000000
    rows_ms = [
        f"{t},100,110,95,105,12.5,{t + 59999},1300,42,6,630,0",
        f"{t + 60000},105,106,90,91,20,{t + 119999},1900,80,9,900,0",
    ]
    rows_us = [r.replace(str(t), str(t * 1000), 1).replace(str(t + 60000), str((t + 60000) * 1000), 1) for r in rows_ms]
    for name, rows in (("ms.csv", rows_ms), ("us.csv", rows_us)):
        s = load_price_file(write(tmp_path / name, "\n".join(rows) + "\n"), "BTC/USDT")
        assert (s.rows, s.bad_rows) == (2, 0)
        assert s.ts_ms.tolist() == [t + k * 15_000 for k in range(8)]
        assert s.price.tolist() == [100, 95, 110, 105, 105, 106, 90, 91]


def test_bad_rows_counted_and_skipped(tmp_path: Path) -> None:
    lines = [
        "timestamp,open,high,low,close,volume",
        "1000,10,12,9,11,1",  # good
        "1060,777.01,777.02",  # too few fields
        "1060,777.03,777.04,777.03,777.04,1,extra",  # too many fields
        "1060,abc,777.05,777.05,777.05,1",  # non-numeric
        "1060,nan,777.06,777.06,777.06,1",  # NaN
        "1060,777.07,inf,777.07,777.07,1",  # not finite
        "1060,0,0,0,0,1",  # zero price
        "1060,-777.08,-777.08,-777.08,-777.08,1",  # negative
        "1060,777.09,777.10,777.11,777.09,1",  # high < low
        "1060,777.12,777.12,777.11,777.13,1",  # close above high
        "1060,777.12,777.13,777.11,777.10,1",  # close below low
        "yesterday,777.14,777.14,777.14,777.14,1",  # unparseable time
        "1000,777.15,777.15,777.15,777.15,1",  # time equals previous good bar
        "940,777.16,777.16,777.16,777.16,1",  # time goes back
        "",  # blank line: not data, not counted
        "1060,11,13,10,12,1",  # good
        "1120,12,12,12,12,",  # good (empty volume is ignored)
    ]
    s = load_price_file(write(tmp_path / "bad.csv", "\n".join(lines) + "\n"), "X")
    assert (s.rows, s.bad_rows, s.bad_lines) == (3, 13, tuple(range(3, 16)))
    assert not np.any((s.price > 700) | (s.price <= 0))
    assert s.ts_ms[0::4].tolist() == [1_000_000, 1_060_000, 1_120_000]


def test_bad_rows_in_price_layout(tmp_path: Path) -> None:
    text = "time,price\n10,1\n11,0\n11,-2\n11,inf\n11,x\n10,5\n,6\n11,7,8\n12,2\n"
    s = load_price_file(write(tmp_path / "p.csv", text), "X")
    assert (s.rows, s.bad_rows, s.bad_lines) == (2, 7, tuple(range(3, 10)))
    assert s.price.tolist() == [1, 2]


def test_prices_the_engine_cannot_use_are_bad_rows(tmp_path: Path) -> None:
    # beyond 1e-15..1e15 a ratio of two prices or a holding's value overflows float64
    text = "time,price\n10,1e-15\n11,1e-308\n12,5e-324\n13,1e308\n14,1e16\n15,1e15\n"
    s = load_price_file(write(tmp_path / "p.csv", text), "X")
    assert (s.bad_rows, s.bad_lines, s.price.tolist()) == (4, (3, 4, 5, 6), [1e-15, 1e15])
    candles = "time,open,high,low,close\n10,1,1,1,1\n11,1,1,1e-308,1\n12,1e308,1,1,1\n13,2,2,2,2\n"
    s = load_price_file(write(tmp_path / "c.csv", candles), "X")
    assert (s.rows, s.bad_lines) == (2, (3, 4))


def test_bad_lines_count_from_the_first_line_of_a_headerless_gzip(tmp_path: Path) -> None:
    rows = [f"{1618531200000 + n * 60_000},1,1,1,1,5" for n in range(30)]
    rows[0] = rows[0].replace(",1,1,1,1,", ",1,1,2,1,")  # low above high: the file's first line is bad
    for n in (5, 9, 25):
        rows[n] = rows[n].replace(",1,1,1,1,", ",x,1,1,1,")
    path = tmp_path / "k.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    s = load_price_file(path, "X")
    assert (s.bad_rows, s.bad_lines) == (4, (1, 6, 10, 26))
    assert describe_bad_rows(s.bad_rows, s.bad_lines) == "4 bad rows (lines 1, 6, 10, 26)"
    assert describe_bad_rows(100, tuple(range(1, 21))).endswith("19, 20, ...)")


# ---------------------------------------------------------------- errors


def error_for(path: Path | str) -> str:
    with pytest.raises(PriceFileError) as info:
        load_price_file(path, "X")
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.csv", b"", "empty file"),
        ("blank.csv", b"\n\n", "empty file"),
        ("header_only.csv", b"timestamp,price\n", "no valid rows: 0 bad rows"),
        ("all_bad.csv", b"timestamp,price\n1,0\n2,x\n", "no valid rows: 2 bad rows (lines 2, 3)"),
        ("prices.csv", b"when,price\n1,2\n", "no time column (expected one of timestamp, time, date, open_time_ms"),
        ("short_rows.csv", b"1618704000000,1,2\n", "no time column"),
        ("noprice.csv", b"time,open,high,close\n1,2,3,4\n", "no price column"),
        ("corrupt.csv.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage", "corrupt gzip data"),
        ("bad_crc.csv.gz", gzip.compress(b"time,price\n1,2\n", mtime=0)[:-8] + b"\x00" * 8, "corrupt gzip data"),
        ("binary.csv", b"time,price\n\xff\xfe\xfa,1\n", "not a UTF-8 text file"),
    ],
)
def test_errors_name_the_file(tmp_path: Path, name: str, content: bytes, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    message = error_for(path)
    assert message.startswith(f"{path}: ")
    assert problem in message


def test_truncated_gzip(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.csv.gz"
    path.write_bytes((shared_data / ETH_10M).read_bytes()[:-40])
    assert "truncated.csv.gz: " in error_for(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert error_for(tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: cannot read: No such file or directory"
    assert error_for(tmp_path).startswith(f"{tmp_path}: cannot read:")


# ---------------------------------------------------------------- merge


def series(symbol: str, ts: list[int], price: list[float]) -> PriceSeries:
    return PriceSeries(symbol, np.array(ts, np.int64), np.array(price, np.float64), 0, len(ts), f"{symbol}.csv")


def test_merge_orders_by_time_and_keeps_list_order_on_ties() -> None:
    a = series("A", [1, 3, 5], [1.0, 3.0, 5.0])
    b = series("B", [0, 3, 5, 6], [10.0, 30.0, 50.0, 60.0])
    c = series("C", [3], [300.0])
    m = merge_series([a, b, c])
    assert isinstance(m, MergedTicks) and len(m) == 8
    assert m.symbols == ("A", "B", "C")
    assert m.ts_ms.tolist() == [0, 1, 3, 3, 3, 5, 5, 6]
    assert m.symbol_index.tolist() == [1, 0, 0, 1, 2, 0, 1, 1]
    assert m.price.tolist() == [10, 1, 3, 30, 300, 5, 50, 60]
    assert (m.ts_ms.dtype, m.symbol_index.dtype, m.price.dtype) == (np.int64, np.int32, np.float64)
    ticks = list(m)
    assert ticks[:2] == [PriceTick("B", 10.0, 0), PriceTick("A", 1.0, 1)]
    assert all(type(t.price) is float and type(t.ts_ms) is int for t in ticks)
    # reversing the list reverses the tie order
    assert merge_series([c, b, a]).price.tolist() == [10, 1, 300, 30, 3, 50, 5, 60]


def test_merge_same_symbol_twice_and_empty() -> None:
    m = merge_series([series("A", [1, 2], [1.0, 2.0]), series("B", [1], [9.0]), series("A", [3], [3.0])])
    assert m.symbols == ("A", "B")
    assert m.symbol_index.tolist() == [0, 1, 0, 0]
    empty = merge_series([])
    assert len(empty) == 0 and empty.symbols == () and list(empty) == []


def test_merge_real_files(shared_data: Path) -> None:
    btc = load_price_file(shared_data / BTC_2021, "BTC/USDT")
    eth = load_price_file(shared_data / ETH_2021, "ETH/USDT")
    m = merge_series([btc, eth])
    assert len(m) == len(btc) + len(eth)
    assert np.all(np.diff(m.ts_ms) >= 0)
    assert np.array_equal(m.price[m.symbol_index == 1], eth.price)
    # same bar times in both files: BTC's tick always comes first
    assert m.symbol_index[:4].tolist() == [0, 1, 0, 1]


# ---------------------------------------------------------------- CLI argument


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("BTC/USDT=data/btc.csv.gz", ("BTC/USDT", "data/btc.csv.gz")),
        (" ETH/USDT = eth.csv ", ("ETH/USDT", "eth.csv")),
        ("X=dir/a=b.csv", ("X", "dir/a=b.csv")),
    ],
)
def test_parse_prices_arg(arg: str, expected: tuple[str, str]) -> None:
    assert parse_prices_arg(arg) == expected


@pytest.mark.parametrize("arg", ["", "btc.csv", "=btc.csv", "BTC/USDT=", "BTC USDT=btc.csv", " = "])
def test_parse_prices_arg_rejects(arg: str) -> None:
    with pytest.raises(PriceFileError, match="expected SYMBOL=FILE"):
        parse_prices_arg(arg)
