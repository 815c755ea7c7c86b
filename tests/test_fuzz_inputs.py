"""Seeded fuzzing of what a user hands the CLI: mutated configs through check-config, mutated
price files through replay. Each case ends in success (exit 0) or in exactly one line on stderr
and exit 2: never a traceback, a warning, or a hang.

Case i is generated from Random(SEED + i) alone, so a failing id reproduces on its own.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import random
import re
import signal
import warnings
from pathlib import Path

import pytest
import structlog

from monitor.cli import main
from monitor.model import iso_ms
from tests.test_cli import strict_json

SEED = 20240518
CONFIG_CASES = 240
PRICE_CASES = 240
CASE_LIMIT_S = 20  # far above a case's real cost (tens of ms); only a hang reaches it

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "config.example.toml", *sorted((REPO / "tests" / "configs").glob("*.toml"))]
CONTRACT = REPO / "tests" / "configs" / "contract.toml"

NUMBERS = ["inf", "-inf", "nan", "+nan", "-1", "0", "-0.0", "1e308", "-1e308", "1e-308", "5e-324", "1e400",
           "1" + "0" * 400, "9223372036854775808", "31536001", "1_000_000_000_000",
           "0.5", "1.5", "2", "3", "100", "0.01", "1e-3"]  # the last ones are often valid: success is tested too
VALUES = ['"x"', '""', '"\\u0000"', "true", "[]", "{}", "[1, 2]", '["a"]', "{ a = 1 }", "1979-05-27T07:32:00Z",
          "07:32:00", '"' + "y" * 5000 + '"']
BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf"]
PRICE_FIELDS = ["inf", "-inf", "nan", "-1", "0", "1e-308", "5e-324", "1e308", "1e400", "1" + "0" * 400, "", "abc",
                "1e-15", "1e15", "0x10", "1,5", '"7"', "\x00"]


class CaseTimeout(BaseException):
    """A BaseException so that no `except Exception` in the code under test can swallow it."""


def _on_alarm(signum, frame):
    raise CaseTimeout()


def run_cli(argv: list[str]) -> tuple[int, str, str, list[str]]:
    """main(argv) in-process, bounded in time: (exit code, stdout, stderr, warnings raised)."""
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
    try:
        with warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            code = main(argv)
    except CaseTimeout:
        pytest.fail(f"no answer within {CASE_LIMIT_S}s: {argv}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        structlog.reset_defaults()  # main() bound logging to the redirected stderr
    return code, out.getvalue(), err.getvalue(), [str(w.message) for w in caught]


def assert_clean_outcome(code: int, err: str, caught: list[str], what: str) -> None:
    assert not caught, f"{what}: a warning reached the user: {caught[:3]}"
    assert "Traceback" not in err, f"{what}: {err[-3000:]}"
    if code == 0:
        return
    assert code == 2, f"{what}: exit {code}: {err[-2000:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("collateral-monitor: error: "), f"{what}: {err[:2000]!r}"


# -- configs ------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.\"-])[-+]?\d[\d_]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.:-])")
_VALUE = re.compile(r"^(\s*[\w.\"-]+\s*=\s*)(.+?)(\s*(?:#.*)?)$")


def _code_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]


def _mutate_config(rng: random.Random, text: str) -> tuple[str, bytes | None, str]:
    """One mutation: (new text, or raw bytes when it is no longer text, what was done)."""
    lines = text.split("\n")
    code = _code_lines(lines)
    kind = rng.choice(["number", "number", "number", "value", "nest", "delete", "duplicate", "truncate",
                       "utf8", "unknown", "dotted"])
    i = rng.choice(code)
    body, sep, comment = lines[i].partition("#")
    if kind == "number":
        spots = list(_NUMBER.finditer(body))
        if spots:
            m = rng.choice(spots)
            sub = rng.choice(NUMBERS)
            lines[i] = body[:m.start()] + sub + body[m.end():] + sep + comment
            return "\n".join(lines), None, f"line {i + 1}: {m.group()} -> {sub[:20]}"
        kind = "value"
    if kind in ("value", "nest"):
        m = _VALUE.match(lines[i])
        if m:
            depth = rng.choice([3, 33, 200, 800, 5000])
            open_, close = rng.choice([("[", "]"), ("{ a = ", " }")])
            sub = rng.choice(VALUES) if kind == "value" else open_ * depth + "1" + close * depth
            lines[i] = m.group(1) + sub + m.group(3)
            return "\n".join(lines), None, f"line {i + 1}: value -> {sub[:20]}"
        kind = "delete"
    if kind == "delete":
        del lines[i]
        return "\n".join(lines), None, f"line {i + 1} deleted"
    if kind == "duplicate":
        lines.insert(i, lines[i])
        return "\n".join(lines), None, f"line {i + 1} duplicated"
    if kind == "truncate":
        cut = rng.randrange(len(text))
        return text[:cut], None, f"truncated at {cut}"
    if kind == "utf8":
        raw = text.encode()
        at = rng.randrange(len(raw))
        bad = rng.choice(BAD_BYTES)
        return text, raw[:at] + bad + raw[at:], f"{bad!r} at byte {at}"
    headers = [n for n in code if lines[n].lstrip().startswith("[")]
    n = rng.choice(headers)
    if kind == "unknown":
        lines.insert(n + 1, rng.choice(["bogus = 1", "confirm_sec = 30", "\"\" = 1", "x = inf",
                                        "params = { max_amount = inf }", "params = { step = " + "9" * 40 + " }"]))
        return "\n".join(lines), None, f"unknown key after line {n + 1}"
    dotted = ".".join(["k"] * rng.choice([5, 40, 2000])) + " = 1"
    lines.insert(n + 1, dotted)
    return "\n".join(lines), None, f"dotted key {len(dotted)} chars after line {n + 1}"


def config_case(i: int) -> tuple[str, bytes]:
    rng = random.Random(SEED + i)
    source = CONFIGS[i % len(CONFIGS)]
    text, raw, done = source.read_text(), None, []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        text, raw, what = _mutate_config(rng, text)
        done.append(what)
        if raw is not None:
            break  # no longer text: stop here
    return f"{source.name}: " + "; ".join(done), raw if raw is not None else text.encode()


def check_config_case(i: int, tmp_path: Path) -> int:
    what, content = config_case(i)
    path = tmp_path / f"config-{i}.toml"
    path.write_bytes(content)
    code, _, err, caught = run_cli(["check-config", str(path)])
    assert_clean_outcome(code, err, caught, what)
    return code


@pytest.mark.parametrize("i", range(CONFIG_CASES), ids=lambda i: f"config-{i:03d}")
def test_mutated_config(i: int, tmp_path: Path) -> None:
    check_config_case(i, tmp_path)


# -- price files ----------------------------------------------------------------------------
START_MS = 1_618_704_000_000  # 2021-04-18, the dump the contract config is tuned on
BAR_MS = 60_000


def _base_rows(rng: random.Random, layout: str, n: int) -> list[str]:
    """Rows like the shared data: Binance klines with a header, header-less (µs times), or time,price."""
    rows, price = [], 60_000.0
    for k in range(n):
        t = START_MS + k * BAR_MS
        o = price
        price *= 1 + rng.gauss(0, 0.004)
        c = price
        h, lo = max(o, c) * (1 + rng.random() / 500), min(o, c) * (1 - rng.random() / 500)
        vol = f"{rng.random() * 100:.4f}"
        if layout == "klines":
            rows.append(f"{t},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},{vol}")
        elif layout == "headerless":
            rows.append(f"{t * 1000},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},{vol},{t * 1000 + 59_999_999},0,12")
        else:
            rows.append(f"{t // 1000},{c:.2f}")
    header = {"klines": ["open_time_ms,open,high,low,close,volume"], "headerless": [], "price": ["timestamp,price"]}
    return header[layout] + rows


def _mutate_rows(rng: random.Random, rows: list[str]) -> str:
    first = 1 if rows and not rows[0][:1].isdigit() else 0
    kind = rng.choice(["field", "field", "field", "order", "duplicate", "fields", "header", "time", "blank", "long"])
    k = rng.randrange(first, len(rows)) if len(rows) > first else 0
    if kind == "field" and len(rows) > first:
        for _ in range(rng.choice([1, 3, 20])):
            k = rng.randrange(first, len(rows))
            cells = rows[k].split(",")
            cells[rng.randrange(len(cells))] = rng.choice(PRICE_FIELDS)
            rows[k] = ",".join(cells)
        return "bad fields"
    if kind == "order" and len(rows) > first + 2:
        j = rng.randrange(first, len(rows))
        rows[k], rows[j] = rows[j], rows[k]
        return f"rows {k + 1} and {j + 1} swapped"
    if kind == "duplicate":
        rows.insert(k, rows[k] if rows else "")
        return f"row {k + 1} duplicated"
    if kind == "fields":
        rows[k] = rows[k] + rng.choice([",1", ",1,2,3"]) if rng.random() < 0.5 else rows[k].rsplit(",", 2)[0]
        return f"row {k + 1} field count changed"
    if kind == "header" and first:
        rows[0] = rng.choice(["", "when,price", "time,open,high,close", "timestamp,price,price", "\ufefftimestamp,price"])
        return "header changed"
    if kind == "time" and len(rows) > first:
        cells = rows[k].split(",")
        cells[0] = rng.choice(["-1", "0", "1e17", "1e16", "2021-13-01", "2021-04-18T00:00:00+25:00", "nan",
                               "9" * 40, "2021-04-18 00:00:00"])
        rows[k] = ",".join(cells)
        return f"row {k + 1} time changed"
    if kind == "long":  # past the csv module's field limit
        rows.insert(k, "1," + "x" * 200_000)
        return f"a 200 kB field at {k + 1}"
    rows.insert(k, "")
    return f"blank line at {k + 1}"


def _finish(rng: random.Random, text: str) -> tuple[bytes, str]:
    """Encode as a real file would arrive: plain or gzip, and sometimes damaged on the way."""
    raw = text.encode("utf-8", "surrogatepass")
    kind = rng.choices(["plain", "gzip", "truncated-gzip", "flipped-gzip", "utf8", "empty", "truncated"],
                       [4, 4, 1, 1, 1, 1, 1])[0]
    if kind == "plain":
        return raw, kind
    if kind == "utf8":
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + rng.choice(BAD_BYTES) + raw[at:], f"bad UTF-8 at byte {at}"
    if kind == "empty":
        return rng.choice([b"", gzip.compress(b""), b"\n\n"]), kind
    if kind == "truncated":
        return raw[:rng.randrange(len(raw) + 1)], kind
    packed = gzip.compress(raw, mtime=0)
    if kind == "truncated-gzip":
        return packed[:rng.randrange(2, len(packed))], kind
    if kind == "flipped-gzip":
        at = rng.randrange(10, len(packed))
        return packed[:at] + bytes([packed[at] ^ 0xFF]) + packed[at + 1:], f"byte {at} flipped in gzip"
    return packed, kind


def _window(rng: random.Random) -> tuple[list[str], str]:
    """--start/--end: mostly none, sometimes inside the data, inverted, empty or outside it."""
    kind = rng.choices(["none", "inside", "inverted", "empty", "outside"], [6, 3, 1, 1, 1])[0]
    a, b = START_MS + rng.randrange(0, 60) * BAR_MS, START_MS + rng.randrange(60, 240) * BAR_MS
    span = {"none": None, "inside": (a, b), "inverted": (b, a), "empty": (a, a),
            "outside": (START_MS + 10**9, START_MS + 2 * 10**9)}[kind]
    if span is None:
        return [], kind
    return ["--start", iso_ms(span[0]), "--end", iso_ms(span[1])], kind


def price_case(i: int) -> tuple[str, bytes, list[str]]:
    rng = random.Random(SEED + 10**6 + i)
    layout = rng.choice(["klines", "headerless", "price"])
    rows = _base_rows(rng, layout, rng.choice([1, 2, 30, 200]))
    done = [layout]
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        done.append(_mutate_rows(rng, rows))
    content, how = _finish(rng, "\n".join(rows) + "\n")
    window, span = _window(rng)
    return ", ".join([*done, how, f"window {span}"]), content, window


@pytest.fixture(scope="module")
def eth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The other asset the contract account holds: a good file over the same hours, in 10-minute bars
    (few ticks: the time goes to the file under test)."""
    path = tmp_path_factory.mktemp("eth") / "eth.csv.gz"
    rows = ["open_time_ms,open,high,low,close,volume"]
    rows += [f"{START_MS + (k - 1) * 10 * BAR_MS},2400,2410,2390,2400,10" for k in range(26)]
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    return path


def check_price_case(i: int, tmp_path: Path, eth_file: Path) -> int:
    what, content, window = price_case(i)
    path, report = tmp_path / f"btc-{i}.csv", tmp_path / f"report-{i}.json"
    path.write_bytes(content)
    argv = ["replay", "--config", str(CONTRACT), "--prices", f"BTC/USDT={path}", "--prices", f"ETH/USDT={eth_file}",
            *window, "--report", str(report)]
    code, out, err, caught = run_cli(argv)
    assert_clean_outcome(code, err, caught, what)
    if code == 0:
        doc = strict_json(report.read_text())
        assert doc["ticks"] > 0 and "replayed" in out, what
    return code


@pytest.mark.parametrize("i", range(PRICE_CASES), ids=lambda i: f"prices-{i:03d}")
def test_mutated_price_file(i: int, tmp_path: Path, eth_file: Path) -> None:
    check_price_case(i, tmp_path, eth_file)


def test_the_fuzz_reaches_both_outcomes(tmp_path: Path, eth_file: Path) -> None:
    # mutations that always pass, or always fail, would test only half of what a user can meet
    configs = {check_config_case(i, tmp_path) for i in range(0, CONFIG_CASES, 6)}
    prices = {check_price_case(i, tmp_path, eth_file) for i in range(0, PRICE_CASES, 6)}
    assert configs == prices == {0, 2}
