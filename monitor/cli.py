"""Command line: run, check-config, replay, sweep, stress (and the store commands of monitor/cli_state.py).

User errors (bad config, bad price file, unknown asset) end with one line on
stderr naming the culprit and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from monitor.analysis.commands import add_analysis_commands
from monitor.analysis.replay_outputs import add_chart_arguments
from monitor.config import Settings, load_settings
from monitor.errors import UserError
from monitor.feeds.price_file import describe_bad_rows
from monitor.inputs import load_checked, load_series, parse_time, registry
from monitor.logs import configure_logging
from monitor.model import PriceTick
from monitor.risk.portfolio import to_native

if TYPE_CHECKING:  # annotations only: `run` imports the daemon when it starts
    from monitor.daemon import Daemon

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a writer its pipe killed


# -- check-config ------------------------------------------------------------------------
def cmd_check_config(args: argparse.Namespace) -> int:
    settings, monitor = load_checked(args.file)
    from monitor.wiring import build_feed
    for f in settings.feeds:  # building a feed does no I/O, but rejects an unknown venue, sandbox or symbol
        build_feed(f, settings)
    if args.prices:  # value the accounts at each file's last price
        for s in load_series(settings, args.prices, None, None):
            if len(s):
                monitor.on_tick(PriceTick(s.symbol, float(s.price[-1]), int(s.ts_ms[-1])))
    print(f"{args.file}: OK — {len(settings.accounts)} account(s), {len(settings.assets)} asset(s), "
          f"{len(settings.feeds)} feed(s), mode {settings.execution.mode}")
    for f in settings.feeds:
        venue = "" if f.driver == "simulated" else f" {f.exchange}{' testnet' if f.testnet else ''}"
        print(f"  feed {f.name}: {f.driver}{venue}, {', '.join(f.symbols)}")
    for i, acc in enumerate(settings.accounts):
        st = monitor.status(i)
        health = "needs live prices" if math.isnan(st.health) else f"{st.health:.4f} (native {st.native:.4f})"
        if acc.source != "config":  # holdings arrive with the first sync at run time
            health = f"from the holdings synced from {acc.source}{' testnet' if acc.testnet else ''} at run time"
        print(f"  {acc.name}: {acc.model}, health {health}")
        for lv in monitor.rules.accounts[i].levels:
            native = to_native(acc.model, monitor.engine.books[i].param, lv.threshold)
            what = lv.action if lv.action == "alert" else f"rebalance with {lv.strategy} to health {lv.target:.4g}"
            print(f"    {lv.name}: below health {lv.threshold:.4g} (native {native:.4g}), "
                  f"confirm {lv.confirm_ms / 1000:g}s -> {what}")
    from monitor.alerts.build import channel_lines
    for line in channel_lines(settings):
        print(line)
    return 0


# -- replay ------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    from monitor.analysis import replay_outputs as charts
    from monitor.analysis.progress import progress_bar
    from monitor.replay import run_replay

    settings, _ = load_checked(args.config)
    start = parse_time(args.start, "--start") if args.start else None
    end = parse_time(args.end, "--end") if args.end else None
    series = load_series(settings, args.prices, start, end)
    charts.check_chart_outputs(args)
    sampler = charts.chart_sampler(args, settings, series)
    bar = progress_bar("replay", "ticks")
    alerts: list = []
    report = run_replay(settings, series, registry(), bar.update if bar else None, sampler,
                        _alert_collector(settings, alerts) if args.notify else None)
    if bar:
        bar.close()
    if args.report:
        try:
            Path(args.report).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        except OSError as err:
            raise UserError(f"--report {args.report}: cannot write ({err.strerror})") from None
    print_summary(report)
    charts.write_charts(args, settings, series, report, sampler)
    if args.notify:  # only on request: a replay never sends by default
        from monitor.alerts.commands import notify_replay
        return asyncio.run(notify_replay(settings, alerts))
    return 0


def _alert_collector(settings: Settings, into: list):
    from monitor.alerts.content import Alert, describe

    sources = {a.symbol: "replay" for a in settings.assets.values() if a.symbol}
    return lambda monitor, ev: into.append(Alert.from_event(ev, describe(monitor, ev, sources)))


def _h(x: float | None) -> str:
    return "inf" if x is None else f"{x:.4f}"


def print_summary(report: dict) -> None:
    print(f"replayed {report['ticks']} ticks from {report['start']} to {report['end']} "
          f"in {report['wall_seconds']:.2f}s ({report['bad_rows']} bad rows skipped)")
    for path, bad in report["bad_rows_by_file"].items():  # where to look, not just how many
        print(f"  {path}: skipped {describe_bad_rows(bad['rows'], bad['lines'])}")
    for name, a in report["accounts"].items():
        b = a["baseline"]
        liq = f"LIQUIDATED at {a['liquidated_at']}" if a["liquidated"] else "not liquidated"
        base = f"LIQUIDATED at {b['liquidated_at']}" if b["liquidated"] else "not liquidated"
        print(f"  {name} ({a['model']}): health {_h(a['start_health'])} -> {_h(a['end_health'])}, "
              f"min {_h(a['min_health'])} at {a['min_health_at']}, {liq}")
        print(f"    {len(a['alerts'])} alert(s), {len(a['actions'])} action(s), traded {a['traded_notional']:.2f}, "
              f"fees {a['fees']:.2f}; without actions: min {_h(b['min_health'])}, {base}")


# -- run ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from monitor.reload import Reloader
    from monitor.service import run_daemon
    from monitor.statelock import StateInUse, hold_state
    from monitor.wiring import build_daemon

    settings, _ = load_checked(args.config)

    async def main() -> int:
        stop = asyncio.Event()
        async with hold_state(settings, args.config, args.adopt_state, on_lost=stop.set) as held:
            code = await serve(build_daemon(settings, registry(), live=args.live), stop)
        if held.lost:  # another daemon took the state: it is that one's now
            raise StateInUse(held.lost)
        return code

    async def serve(daemon: Daemon, stop: asyncio.Event) -> int:
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()

        def on_signal() -> None:
            if stop.is_set():  # the second signal forces
                current.cancel()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        reloader = Reloader(args.config, registry())
        reloads: set[asyncio.Task] = set()  # held until done: the loop keeps only weak references

        def on_hangup() -> None:
            task = asyncio.create_task(reloader.reload(daemon))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        return await run_daemon(daemon, stop)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        return 130


# -- alerting -----------------------------------------------------------------------------
def cmd_silence(args: argparse.Namespace) -> int:
    from monitor.alerts.commands import silence

    settings = load_settings(args.config)
    if args.list or args.expire:
        if args.account or args.duration:
            raise UserError("silence: --list and --expire take no ACCOUNT or --for")
    return asyncio.run(silence(settings, args.account, args.level, args.duration, args.comment, args.list,
                               args.expire))


def cmd_test_alert(args: argparse.Namespace) -> int:
    from monitor.alerts.commands import test_alert

    return asyncio.run(test_alert(load_settings(args.config)))


# -- entry point ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="collateral-monitor",
                                description="Keeps leveraged crypto accounts away from liquidation.")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto",
                   help="JSON lines (default when not on a terminal) or readable lines")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, help="the TOML config file")
    run.add_argument("--live", action="store_true",
                     help="allow real-money orders (the config must also say execution.mode = \"live\")")
    run.add_argument("--adopt-state", action="store_true",
                     help="take over a state recorded as another config's (a moved config file, or on purpose)")
    run.set_defaults(func=cmd_run)

    chk = sub.add_parser("check-config", help="validate a config and print a summary")
    chk.add_argument("file")
    chk.add_argument("--prices", action="append", default=[], metavar="SYMBOL=FILE",
                     help="value the accounts at the last price in these files")
    chk.set_defaults(func=cmd_check_config)

    rep = sub.add_parser("replay", help="replay historical prices through the daemon's logic")
    rep.add_argument("--config", required=True)
    rep.add_argument("--prices", action="append", required=True, metavar="SYMBOL=FILE",
                     help="a CSV (optionally gzipped) of one symbol's prices; repeat per symbol")
    rep.add_argument("--start", help="ISO-8601 start (inclusive)")
    rep.add_argument("--end", help="ISO-8601 end (exclusive)")
    rep.add_argument("--report", metavar="OUT.json", help="write the JSON report here")
    add_chart_arguments(rep)
    rep.add_argument("--notify", action="store_true",
                     help="send the replay's alerts through the configured notifiers (default: never sends)")
    rep.set_defaults(func=cmd_replay)
    add_analysis_commands(sub)

    sil = sub.add_parser("silence", help="mute an account's notifications for a while (never its actions)")
    sil.add_argument("account", nargs="?", metavar="ACCOUNT", help='an account name, or "*" for all')
    sil.add_argument("level", nargs="?", metavar="LEVEL", help="one level (default: all), or 'stale'")
    sil.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 30m, 2h, 1d")
    sil.add_argument("--comment", default="", help="why (shown by --list)")
    sil.add_argument("--list", action="store_true", help="list the silences in force")
    sil.add_argument("--expire", metavar="ID", help="end a silence now")
    sil.add_argument("--config", required=True)
    sil.set_defaults(func=cmd_silence)

    tst = sub.add_parser("test-alert", help="send one tagged test message to every configured channel")
    tst.add_argument("--config", required=True)
    tst.set_defaults(func=cmd_test_alert)

    from monitor import cli_state
    cli_state.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader gone early (`| head`) surfaces here, not as a traceback at exit
        return code
    except UserError as err:
        print(f"collateral-monitor: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing to flush
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
