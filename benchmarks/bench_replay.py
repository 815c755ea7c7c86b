"""Replay of the 2021-04-18 crash day: 1-minute candles, 5 assets, 1,000 accounts.

    python benchmarks/bench_replay.py            # full day, 1,000 accounts
    python benchmarks/bench_replay.py --quick    # 4 hours around the dump, 200 accounts (< 30 s)
    python benchmarks/bench_replay.py --profile  # also print the top functions of run_replay (cProfile)

Prices: ../shared/data/binance_1m_2021-04 (Binance BTC, ETH, BNB, SOL, XRP vs USDT,
2021-04-18 00:00 to 2021-04-19 00:00 UTC) when present, else seeded synthetic candles
with a dump at 03:35 (said so in the output). Candles expand to 4 ticks each.

Accounts: a seeded random book built as a config dict and validated by
monitor.config.parse_settings: random holdings over the 5 assets plus USDT debt
sized for a chosen start health, a mix of the four models (some unified accounts
carry a BTC or ETH perp), levels warn (alert) and act (rebalance with repay_debt or
sell_to_stable; margin_level accounts always repay_debt).

Timed in one process, over the same merged ticks:
  run_replay       monitor.replay.run_replay: engine + rules + strategies + paper
                   executor, plus the no-action baseline engine and the report;
  monitor, no act  Monitor(act=False).on_tick: engine + rules + volatility + staleness,
                   no strategies, no executor, no baseline, no report;
  engine only      RiskEngine.apply for each tick, nothing else.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from monitor.accounts.static import build_books  # noqa: E402
from monitor.config import Settings, parse_settings  # noqa: E402
from monitor.feeds.price_file import PriceSeries, load_price_file, merge_series  # noqa: E402
from monitor.risk.engine import RiskEngine  # noqa: E402
from monitor.risk.portfolio import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "binance_1m_2021-04"
FILE = "binance_{}USDT_1m_2021-04-16_2021-04-19.csv.gz"
DAY_START_MS = 1_618_704_000_000  # 2021-04-18T00:00:00Z
HOUR_MS = 3_600_000
COINS = ("BTC", "ETH", "BNB", "SOL", "XRP")
MODELS = ("health_factor", "ltv", "margin_level", "unified")
MODEL_SHARE = (0.35, 0.25, 0.20, 0.20)

ASSETS = {
    "BTC": {"price": "BTC/USDT", "weight": 0.9, "lot_size": 0.00001, "min_notional": 5},
    # tiered by USD value (Bybit/OKX style): first 100k at 90%, next 900k at 85%, the rest at 75%
    "ETH": {"price": "ETH/USDT", "weight": [{"up_to": 100_000, "weight": 0.9}, {"up_to": 1_000_000, "weight": 0.85},
                                            {"weight": 0.75}], "lot_size": 0.0001, "min_notional": 5},
    "BNB": {"price": "BNB/USDT", "weight": 0.8, "lot_size": 0.001, "min_notional": 5},
    "SOL": {"price": "SOL/USDT", "weight": 0.75, "lot_size": 0.01, "min_notional": 5},
    "XRP": {"price": "XRP/USDT", "weight": 0.7, "lot_size": 0.1, "min_notional": 5},
    "USDT": {"price": 1.0},
}


# ---------------------------------------------------------------- prices


def load_real(start_ms: int, end_ms: int) -> list[PriceSeries] | None:
    paths = [DATA / FILE.format(c) for c in COINS]
    if not all(p.is_file() for p in paths):
        return None
    return [load_price_file(p, f"{c}/USDT", start_ms, end_ms) for c, p in zip(COINS, paths)]


def synthesize(start_ms: int, end_ms: int, seed: int, tmp: Path) -> list[PriceSeries]:
    """Seeded 1-minute candles with a 2021-04-18-like dump (-15 % BTC, more for alts) at 03:35."""
    rng = np.random.default_rng(seed)
    bars = np.arange(DAY_START_MS, DAY_START_MS + 24 * HOUR_MS, 60_000)
    crash = (bars - DAY_START_MS) / 60_000 - (3 * 60 + 35)
    start = {"BTC": 60_000.0, "ETH": 2_300.0, "BNB": 540.0, "SOL": 27.0, "XRP": 1.95}
    out = []
    for n, coin in enumerate(COINS):
        depth = 0.15 * (1 + 0.3 * n)
        shock = np.where((crash >= 0) & (crash < 20), math.log(1 - depth) / 20, 0.0)
        shock += np.where((crash >= 20) & (crash < 200), -0.4 * math.log(1 - depth) / 180, 0.0)
        logp = math.log(start[coin]) + np.cumsum(rng.normal(0, 0.0012, len(bars)) + shock)
        close = np.exp(logp)
        open_ = np.concatenate(([start[coin]], close[:-1]))
        wick = np.abs(rng.normal(0, 0.001, (2, len(bars))))
        high = np.maximum(open_, close) * (1 + wick[0])
        low = np.minimum(open_, close) * (1 - wick[1])
        path = tmp / f"{coin}.csv"
        rows = ["open_time_ms,open,high,low,close"]
        rows += [f"{t},{o!r},{h!r},{lo!r},{c!r}" for t, o, h, lo, c in zip(bars.tolist(), open_.tolist(),
                                                                        high.tolist(), low.tolist(), close.tolist())]
        path.write_text("\n".join(rows) + "\n")
        out.append(load_price_file(path, f"{coin}/USDT", start_ms, end_ms))
    return out


# ---------------------------------------------------------------- accounts


def _levels(model: str, strategy: str, confirm_s: float) -> list[dict]:
    if model == "unified":  # in the venue's unit: MM rate = 1 / health
        warn = {"name": "warn", "mm_rate": 0.5}
        act = {"mm_rate": 0.7, "target_mm_rate": 0.4}
    else:
        warn = {"name": "warn", "health": 1.3}
        act = {"health": 1.15, "target": 1.4}
    return [warn, {"name": "act", "action": "rebalance", "strategy": strategy, "confirm_s": confirm_s,
                   "cooldown_s": 300, **act}]


def make_settings(n: int, start_prices: dict[str, float], seed: int) -> Settings:
    rng = np.random.default_rng(seed)
    accounts = []
    targets = []
    for i in range(n):
        model = MODELS[int(rng.choice(len(MODELS), p=MODEL_SHARE))]
        held = rng.choice(COINS, size=int(rng.integers(1, 6)), replace=False).tolist()
        share = rng.exponential(size=len(held))
        value = math.exp(rng.normal(math.log(50_000), 1.2))
        holdings = {c: round(value * s / share.sum() / start_prices[c], 8) for c, s in zip(held, share)}
        acc: dict = {"name": f"acct{i:05d}", "model": model, "holdings": holdings, "max_actions_per_day": 10}
        if model == "ltv":
            acc["liquidation_ltv"] = round(float(rng.uniform(0.8, 0.9)), 3)
        elif model == "margin_level":
            acc["liquidation_level"] = 1.1
        elif model == "unified":
            acc["borrow_mmr"] = {"USDT": 0.05}
            if rng.random() < 0.5:
                coin = str(rng.choice(("BTC", "ETH")))
                size = float(rng.choice((-1.0, 1.0)) * value * rng.uniform(0.1, 1.0) / start_prices[coin])
                acc["positions"] = [{"symbol": f"{coin}/USDT", "size": round(size, 6),
                                     "entry": round(start_prices[coin] * math.exp(rng.normal(0, 0.02)), 2),
                                     "mmr": 0.01}]
        strategy = "repay_debt" if model == "margin_level" or rng.random() < 0.5 else "sell_to_stable"
        acc["levels"] = _levels(model, strategy, float(rng.choice((0, 30, 60))))
        accounts.append(acc)
        median = 2.6 if model == "unified" else 1.55
        targets.append(math.exp(rng.normal(math.log(median), 0.15)))
    # Size each account's USDT debt for its start health at the window's first prices.
    raw = {"assets": ASSETS, "accounts": accounts}
    prices = {**start_prices, "USDT": 1.0}
    for acc, book, h in zip(accounts, build_books(parse_settings(raw, "bench")), targets):
        t = evaluate(book, prices)  # no debt yet: num = collateral (+ perp PnL), den = perp maintenance
        if book.model == "unified":
            debt = (t.num - h * t.den) / (h * 0.05 + 1)
        else:
            debt = book.scale * t.num / h
        acc["holdings"]["USDT"] = -round(max(debt, 1.0), 2)
    return parse_settings(raw, "bench")


# ---------------------------------------------------------------- runs


def time_engine_only(settings: Settings, merged) -> tuple[float, float]:
    books = build_books(settings)
    fixed = {n: float(a.price) for n, a in settings.assets.items() if a.symbol is None}
    engine = RiskEngine(books, list(settings.assets), fixed)
    by_symbol = {a.symbol: engine.asset_index[n] for n, a in settings.assets.items() if a.symbol}
    ks = [by_symbol[s] for s in merged.symbols]
    apply = engine.apply
    t0, c0 = time.perf_counter(), time.process_time()
    for ts, si, p in zip(merged.ts_ms.tolist(), merged.symbol_index.tolist(), merged.price.tolist()):
        apply(ks[si], p, ts)
    return time.perf_counter() - t0, time.process_time() - c0


def time_monitor_no_act(settings: Settings, merged, registry) -> tuple[float, float, int]:
    from monitor.core import Monitor

    monitor = Monitor(settings, registry, act=False)
    events = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for tick in merged:
        events += len(monitor.on_tick(tick))
    return time.perf_counter() - t0, time.process_time() - c0, events


def summarize(report: dict) -> dict:
    accs = report["accounts"].values()
    return {
        "actions": sum(len(a["actions"]) for a in accs),
        "accounts_acted": sum(1 for a in accs if a["actions"]),
        "alerts": sum(len(a["alerts"]) for a in accs),
        "notices": sum(len(a["notices"]) for a in accs),
        "liquidated": sum(a["liquidated"] for a in accs),
        "baseline_liquidated": sum(a["baseline"]["liquidated"] for a in accs),
        "traded": sum(a["traded_notional"] for a in accs),
        "fees": sum(a["fees"] for a in accs),
    }


def wait_for_strategies(max_wait_s: float):
    """strategies.default_registry is being written concurrently: poll for it (every 2 min, up to max_wait_s)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        try:
            import importlib

            import strategies

            importlib.reload(strategies)
            from monitor.replay import run_replay  # noqa: F401  (its imports need the strategies too)

            return strategies.default_registry
        except (ImportError, AttributeError) as err:
            if time.monotonic() >= deadline:
                sys.exit(f"strategies.default_registry is not available ({err}); gave up after {max_wait_s:.0f} s")
            print(f"  waiting for strategies.default_registry ({err}); retrying in 120 s", flush=True)
            time.sleep(120)


def load_prices(args: argparse.Namespace, start_ms: int, end_ms: int) -> tuple[list[PriceSeries], str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        series = None if args.synthetic else load_real(start_ms, end_ms)
        source = f"real Binance 1m candles from {DATA}"
        if series is None:
            series = synthesize(start_ms, end_ms, args.seed, Path(tmp))
            source = "SYNTHETIC candles (real data not found or --synthetic)"
        return series, source, time.perf_counter() - t0


def print_tables(ticks: int, runs: dict[str, tuple[float, float]], report: dict, monitor_events: int,
                 load_s: float, settings_s: float) -> None:
    replay_cpu = runs["replay"][1]
    print("\n## Replay, one process, same ticks\n")
    print("| run | ticks | wall s | ticks/s | µs/tick | CPU s | share of run_replay (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = {"replay": "run_replay (engine + rules + strategies + paper executor + baseline + report)",
              "monitor": "Monitor(act=False).on_tick (engine + rules + vol + staleness)",
              "engine": "RiskEngine.apply only"}
    for key, (s, c) in runs.items():
        print(f"| {labels[key]} | {ticks:,} | {s:.2f} | {ticks / s:,.0f} | {s / ticks * 1e6:,.1f} | {c:.2f} "
              f"| {c / replay_cpu:.0%} |")
    print(f"\nrun_replay's own wall_seconds: {report['wall_seconds']:.2f} s (includes building the Monitor "
          f"and the baseline engine; a replay applies every tick to two engines: the monitor's and the "
          f"no-action baseline's); loading the 5 price files: {load_s:.2f} s; building the settings: "
          f"{settings_s:.2f} s.")
    stats = summarize(report)
    print("\n## What happened\n")
    print("| actions | accounts that acted | alerts (firing + resolved) | notices | liquidated "
          "| liquidated without actions | traded notional | fees | Monitor(act=False) events |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {stats['actions']:,} | {stats['accounts_acted']:,} | {stats['alerts']:,} | {stats['notices']:,} "
          f"| {stats['liquidated']:,} | {stats['baseline_liquidated']:,} | {stats['traded']:,.0f} "
          f"| {stats['fees']:,.0f} | {monitor_events:,} |")


def print_profile(run_replay, settings: Settings, series: list[PriceSeries], registry) -> None:
    prof = cProfile.Profile()
    prof.enable()
    run_replay(settings, series, registry)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
    print("\n## cProfile of one run_replay (top 20 by own time; profiling overhead inflates small calls)\n")
    print("```")
    print("\n".join(line for line in buf.getvalue().splitlines()[4:] if line.strip()))
    print("```")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 hours, 200 accounts (< 30 s)")
    ap.add_argument("--accounts", type=int, default=None)
    ap.add_argument("--seed", type=int, default=20210418)
    ap.add_argument("--synthetic", action="store_true", help="use synthetic candles even if the real data is there")
    ap.add_argument("--profile", action="store_true", help="print the top functions of one run_replay (cProfile)")
    ap.add_argument("--wait-s", type=float, default=25 * 60, help="how long to wait for strategies.default_registry")
    args = ap.parse_args(argv)
    n = args.accounts or (200 if args.quick else 1_000)
    start_ms = DAY_START_MS + (2 * HOUR_MS if args.quick else 0)
    end_ms = DAY_START_MS + (6 * HOUR_MS if args.quick else 24 * HOUR_MS)

    default_registry = wait_for_strategies(args.wait_s)
    from monitor.replay import run_replay

    series, source, load_s = load_prices(args, start_ms, end_ms)
    merged = merge_series(series)
    start_prices = {s.symbol.split("/")[0]: float(s.price[0]) for s in series}
    t0 = time.perf_counter()
    settings = make_settings(n, start_prices, args.seed)
    settings_s = time.perf_counter() - t0
    print(f"# bench_replay: {n:,} accounts x {len(COINS)} assets + USDT, {len(merged):,} ticks "
          f"({sum(len(s) for s in series) // 4:,} candles x 4), seed {args.seed}, {os.cpu_count()} CPUs"
          f"{' (quick)' if args.quick else ''}")
    print(f"# prices: {source}, {merged.ts_ms[0]} .. {merged.ts_ms[-1]} ms")
    load0 = os.getloadavg()[0]

    t0, c0 = time.perf_counter(), time.process_time()
    report = run_replay(settings, series, default_registry())
    runs = {"replay": (time.perf_counter() - t0, time.process_time() - c0)}
    monitor_s, monitor_cpu, monitor_events = time_monitor_no_act(settings, merged, default_registry())
    runs["monitor"] = (monitor_s, monitor_cpu)
    runs["engine"] = time_engine_only(settings, merged)
    print_tables(len(merged), runs, report, monitor_events, load_s, settings_s)
    load1 = os.getloadavg()[0]
    print(f"\nLoad average (1 min) at start / end: {load0:.2f} / {load1:.2f} on {os.cpu_count()} CPUs"
          + ("  -- other processes competed for the CPU: wall times are inflated, compare CPU s"
             if max(load0, load1) > (os.cpu_count() or 1) else ""))
    if args.profile:
        print_profile(run_replay, settings, series, default_registry())


if __name__ == "__main__":
    main()
