"""Replay charts: the PNG is read back (size, not blank), the HTML is parsed (self-contained,
with the data points in it), the summary for many accounts, the progress bar on a terminal
only, and the one-line error without matplotlib."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from monitor.analysis.charts import SMALL_MULTIPLES_MAX, build_chart, sampler_for
from monitor.analysis.html import replay_html
from monitor.analysis.plot import replay_figure, save_png, svg_text
from monitor.config import load_settings, parse_settings
from monitor.inputs import load_series, parse_time
from monitor.replay import run_replay
from strategies import default_registry
from tests.test_cli import REPO, assert_user_error, cli

EXAMPLE = REPO / "examples" / "crash-2021-04-18.toml"
WINDOW = ("2021-04-17T12:00Z", "2021-04-19T00:00Z")


def crash_args(shared_data: Path, assets=("BTC", "ETH", "SOL")) -> list[str]:
    out = []
    for a in assets:
        out += ["--prices", f"{a}/USDT={shared_data}/binance_1m_2021-04/binance_{a}USDT_1m_2021-04-16_2021-04-19.csv.gz"]
    return out + ["--start", WINDOW[0], "--end", WINDOW[1]]


def assert_readable_png(path: Path, min_size: tuple[int, int]) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(str(path))
    height, width = img.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], img.shape
    rgb = img[..., :3].reshape(-1, 3)
    ink = (rgb < 0.9).any(axis=1).mean()  # the share of pixels that are not (near) white
    assert 0.02 < ink < 0.9, ink
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 50  # lines, markers, text: many colours
    return img


class Page(HTMLParser):
    """What a browser would load or run from the page, and the embedded data."""

    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.scripts: list[dict] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self._in_data = False
        self.data = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "link" or "src" in a:
            self.external.append(f"{tag} {a}")
        if tag == "script":
            self.scripts.append(a)
            self._in_data = a.get("id") == "replay-data"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data += data


def test_replay_plot_and_html_from_the_cli(tmp_path: Path, shared_data: Path) -> None:
    png, page, rep = tmp_path / "crash.png", tmp_path / "crash.html", tmp_path / "report.json"
    proc = cli("replay", "--config", str(EXAMPLE), *crash_args(shared_data), "--plot", str(png), "--html", str(page),
               "--report", str(rep))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
    assert_readable_png(png, min_size=(900, 900))  # three account panels and the prices
    report = json.loads(rep.read_text())

    parsed = Page()
    parsed.feed(page.read_text())
    assert parsed.external == [] and all(s.get("type") == "application/json" for s in parsed.scripts)
    assert "svg" in parsed.tags and {"protected", "baseline", "actions"} <= parsed.ids
    data = json.loads(parsed.data)
    assert set(data["accounts"]) == set(report["accounts"]) == {"lender", "margin", "uta"}
    for name, acc in data["accounts"].items():
        expected = report["accounts"][name]
        lowest = min(h for _, h in acc["protected"] if h is not None)
        assert lowest == expected["min_health"]  # each point is a bucket's lowest, so their minimum is the run's
        assert min(h for _, h in acc["baseline"] if h is not None) == expected["baseline"]["min_health"]
        assert len(acc["protected"]) > 100
        assert acc["actions"] == expected["actions"] and acc["alerts"] == expected["alerts"]
    assert data["accounts"]["margin"]["levels"] == [{"name": "warn", "health": 1.25 / 1.1},
                                                    {"name": "act", "health": 1.18 / 1.1}]
    assert set(data["prices"]) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    assert report["accounts"]["lender"]["baseline"]["liquidated"] and not report["accounts"]["lender"]["liquidated"]


def test_many_accounts_get_a_summary_chart(tmp_path: Path, shared_data: Path) -> None:
    n = SMALL_MULTIPLES_MAX + 4
    settings = parse_settings({
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.9}, "USDT": {"price": 1.0}},
        "accounts": [{"name": f"a{i}", "holdings": {"BTC": 1.0, "USDT": -(40_000 + 1_500 * i)},
                      "levels": [{"name": "act", "health": 1.1, "action": "rebalance", "strategy": "repay_debt",
                                  "target": 1.3}]} for i in range(n)],
    })
    series = load_series(settings, crash_args(shared_data, ("BTC",))[1:2], parse_time(WINDOW[0], "s"),
                         parse_time(WINDOW[1], "e"))
    assert sampler_for(settings, series) is None  # nothing per account is recorded for a summary
    report = run_replay(settings, series, default_registry())
    chart = build_chart(settings, series, report, None)
    fig = replay_figure(chart)
    save_png(fig, str(tmp_path / "many.png"))
    assert_readable_png(tmp_path / "many.png", min_size=(900, 600))
    svg = svg_text(fig)
    assert svg.startswith("<svg") and 'id="hist-protected"' in svg and 'id="hist-baseline"' in svg
    parsed = Page()
    parsed.feed(replay_html(chart, svg))
    assert json.loads(parsed.data)["report"]["accounts"].keys() == report["accounts"].keys()


def test_progress_bar_only_on_a_terminal(shared_data: Path) -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "monitor", "replay", "--config", str(EXAMPLE),
                               *crash_args(shared_data)], cwd=REPO, stdout=subprocess.PIPE, stderr=slave,
                              text=True, timeout=120)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = seen.decode()
    assert "replay [" in text and "25920/25920 ticks" in text
    assert "replay [" not in proc.stdout


def test_without_matplotlib_the_error_says_what_to_install(tmp_path: Path, shared_data: Path) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
            "from monitor.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "replay", "--config", str(EXAMPLE), *crash_args(shared_data),
                           "--plot", str(tmp_path / "x.png")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_user_error(proc, "matplotlib", "pip install 'collateral-monitor[plot]'")
    assert not (tmp_path / "x.png").exists()


def test_an_unwritable_chart_path_is_one_line(shared_data: Path, tmp_path: Path) -> None:
    assert_user_error(cli("replay", "--config", str(EXAMPLE), *crash_args(shared_data),
                          "--html", str(tmp_path / "missing" / "x.html")), "--html", "no such directory")


def test_example_config_is_valid() -> None:
    assert load_settings(EXAMPLE).accounts[0].name == "lender"


def test_nothing_to_draw_is_one_line(shared_data: Path, tmp_path: Path) -> None:
    args = crash_args(shared_data, ("BTC",))[:2]
    assert_user_error(cli("replay", "--config", str(REPO / "examples" / "offline.toml"), *args,
                          "--start", "2030-01-01T00:00Z", "--plot", str(tmp_path / "x.png")),
                      "no tick in the --start/--end window")
