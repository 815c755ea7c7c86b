"""`replay --plot OUT.png` and `--html OUT.html`: what the CLI adds to a replay."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from monitor.analysis.charts import build_chart, sampler_for
from monitor.analysis.sampling import HealthSampler
from monitor.config import Settings
from monitor.errors import UserError
from monitor.feeds.price_file import PriceSeries


def add_chart_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plot", metavar="OUT.png", help="draw health, levels, alerts, actions and prices (PNG)")
    parser.add_argument("--html", metavar="OUT.html", help="the same chart and tables as one self-contained HTML file")


def wants_charts(args: argparse.Namespace) -> bool:
    return bool(args.plot or args.html)


def check_chart_outputs(args: argparse.Namespace) -> None:
    """Before a long replay: matplotlib is there and the outputs can be written (load_series has
    made sure there is something to draw)."""
    if not wants_charts(args):
        return
    from monitor.analysis.plot import new_figure
    new_figure(1, 1)  # raises the one-line "install the [plot] extra" error
    for flag, path in (("--plot", args.plot), ("--html", args.html)):
        if path and not Path(path).resolve().parent.is_dir():
            raise UserError(f"{flag} {path}: no such directory")


def chart_sampler(args: argparse.Namespace, settings: Settings, series: Sequence[PriceSeries]) -> HealthSampler | None:
    return sampler_for(settings, series) if wants_charts(args) else None


def write_charts(args: argparse.Namespace, settings: Settings, series: Sequence[PriceSeries], report: dict,
                 sampler: HealthSampler | None) -> None:
    if not wants_charts(args):
        return
    from monitor.analysis.html import replay_html
    from monitor.analysis.plot import replay_figure, save_png, svg_text

    chart = build_chart(settings, series, report, sampler)
    fig = replay_figure(chart)
    if args.plot:
        save_png(fig, args.plot)
        print(f"chart written to {args.plot}")
    if args.html:
        try:
            Path(args.html).write_text(replay_html(chart, svg_text(fig)), encoding="utf-8")
        except OSError as err:
            raise UserError(f"--html {args.html}: cannot write ({err.strerror or err})") from None
        print(f"HTML report written to {args.html}")
