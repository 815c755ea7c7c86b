"""The `sweep` and `stress` subcommands: argument parsing and printing only; the work is in
sweep.py and stress.py."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import orjson

from monitor.errors import UserError


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="replay over a grid of level parameters and rank the settings")
    sw.add_argument("--config", required=True)
    sw.add_argument("--prices", action="append", required=True, metavar="SYMBOL=FILE")
    sw.add_argument("--start", help="ISO-8601 start (inclusive)")
    sw.add_argument("--end", help="ISO-8601 end (exclusive)")
    sw.add_argument("--vary", action="append", required=True, metavar="LEVEL.PARAM=SPEC",
                    help="START:STOP:STEP (STOP included) or V1,V2,...; repeat for a grid")
    sw.add_argument("--jobs", type=int, help="processes to run cells in (default: one per core)")
    sw.add_argument("--top", type=int, metavar="N", help="show only the N best rows per account")
    sw.add_argument("--csv", metavar="OUT.csv", help="write the raw grid (one row per cell and account)")
    sw.add_argument("--plot", metavar="OUT.png", help="heat maps of minimum health and fees")
    sw.set_defaults(func=cmd_sweep)

    st = sub.add_parser("stress", help="health and plans after price shocks or a named crash scenario")
    st.add_argument("--config", required=True)
    st.add_argument("--prices", action="append", default=[], metavar="SYMBOL=FILE",
                    help="start from these files' prices (default: a snapshot of the feeds, or fixed prices)")
    st.add_argument("--at", help="ISO-8601: start from the files' prices at this time (default: their last row)")
    st.add_argument("--shock", action="append", default=[], metavar="ASSET=PCT", help="e.g. BTC=-30%%; repeat")
    st.add_argument("--scenario", action="append", default=[], metavar="NAME",
                    help="a named crash: each asset's worst drawdown in it, e.g. 2021-04-18; repeat")
    st.add_argument("--feed-timeout", type=float, default=30.0, metavar="S",
                    help="how long to wait for the feeds' first prices (30)")
    st.add_argument("--report", metavar="OUT.json", help="write the results as JSON")
    st.set_defaults(func=cmd_stress)


def _write(flag: str, path: str, data: bytes | str) -> None:
    try:
        Path(path).write_bytes(data if isinstance(data, bytes) else data.encode())
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot write ({err.strerror or err})") from None


# -- sweep -----------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    from monitor.analysis.progress import progress_bar
    from monitor.analysis.sweep import parse_vary, run_sweep
    from monitor.analysis.sweep_output import sweep_csv, sweep_text
    from monitor.inputs import load_checked, load_series, parse_time

    settings, _ = load_checked(args.config)
    axes = tuple(parse_vary(v, settings) for v in args.vary)
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise UserError(f"--vary: {next(k for k in keys if keys.count(k) > 1)} is given twice")
    if args.jobs is not None and args.jobs < 1:
        raise UserError("--jobs: must be at least 1")
    if args.plot:
        from monitor.analysis.plot import new_figure
        from monitor.analysis.sweep_plot import check_plottable
        new_figure(1, 1)  # the one-line "install the [plot] extra" error, before the work
        check_plottable(axes, len(settings.accounts))
    start = parse_time(args.start, "--start") if args.start else None
    end = parse_time(args.end, "--end") if args.end else None
    series = load_series(settings, args.prices, start, end)
    if args.top is not None and args.top < 1:
        raise UserError("--top: must be at least 1")
    bar = progress_bar("sweep", "runs")
    result = run_sweep(settings, axes, series, args.jobs, bar.update if bar else None)
    if bar:
        bar.close()
    print(sweep_text(result, args.top), end="")
    if args.csv:
        _write("--csv", args.csv, sweep_csv(result))
    if args.plot:
        from monitor.analysis.plot import save_png
        from monitor.analysis.sweep_plot import sweep_figure
        save_png(sweep_figure(result), args.plot)
        print(f"heat map written to {args.plot}")
    return 0


# -- stress ----------------------------------------------------------------------------------
def cmd_stress(args: argparse.Namespace) -> int:
    from monitor.analysis.scenarios import find_scenario, scenario_note, scenario_shocks
    from monitor.analysis.shocks import (
        parse_shock,
        prices_from_feeds,
        prices_from_files,
    )
    from monitor.analysis.stress import run_stress
    from monitor.analysis.stress_output import stress_table
    from monitor.inputs import load_checked, load_series, parse_time
    from monitor.model import iso_ms
    from strategies import default_registry

    settings, _ = load_checked(args.config)
    shocks = dict(parse_shock(s, settings) for s in args.shock)
    scenarios = [find_scenario(name) for name in args.scenario]
    if not shocks and not scenarios:
        raise UserError("stress: give at least one --shock ASSET=PCT or --scenario NAME")
    at = parse_time(args.at, "--at") if args.at else None
    if at is not None and not args.prices:
        raise UserError("--at: needs --prices (a snapshot of the feeds is always now)")
    if args.prices:
        prices, ts = prices_from_files(settings, load_series(settings, args.prices, None, None), at)
        origin = f"prices of the files at {iso_ms(ts)}"
    else:
        prices, ts = prices_from_feeds(settings, args.feed_timeout)
        origin = "a snapshot of the feeds" if ts else "the config's fixed prices"
    runs = [(f"scenario {s.name}", {**scenario_shocks(s, settings), **shocks}, scenario_note(s, settings, shocks))
            for s in scenarios] or [("shock", shocks, "")]
    print(f"stress from {origin}")
    out = []
    for title, moves, note in runs:
        results = run_stress(settings, default_registry(), prices, moves, ts)
        print("\n" + stress_table(title, moves, results, note), end="")
        out.append({"title": title, "shocks": moves, "accounts": [dataclasses.asdict(r) for r in results]})
    if args.report:
        _write("--report", args.report, orjson.dumps({"start_prices": prices, "runs": out},
                                                     option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return 0
