"""Sweep of levels over the 2021-04-18 crash: one process against a pool of all cores.

    python benchmarks/bench_sweep.py            # 10 cells, examples/crash-2021-04-18.toml, 36 h of 1-minute bars
    python benchmarks/bench_sweep.py --quick    # 4 cells, 6 hours

Prices: ../shared/data/binance_1m_2021-04, or $CM_SHARED_DATA/binance_1m_2021-04 (BTC, ETH,
SOL against USDT). Both runs sweep
the same grid in the same process tree; the script checks that they agree cell for cell
(exit 1 if not) and prints the wall times and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.analysis.sweep import parse_vary, run_sweep  # noqa: E402
from monitor.inputs import load_checked, load_series, parse_time  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DATA = (SHARED if SHARED.is_dir() else Path(os.environ.get("CM_SHARED_DATA", SHARED))) / "binance_1m_2021-04"
FILE = "binance_{}USDT_1m_2021-04-16_2021-04-19.csv.gz"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"no market data at {DATA}: nothing to measure")
        return 0
    settings, _ = load_checked(str(ROOT / "examples" / "crash-2021-04-18.toml"))
    window = ("2021-04-18T00:00Z", "2021-04-18T06:00Z") if args.quick else ("2021-04-17T12:00Z", "2021-04-19T00:00Z")
    prices = [f"{c}/USDT={DATA / FILE.format(c)}" for c in ("BTC", "ETH", "SOL")]
    series = load_series(settings, prices, parse_time(window[0], "start"), parse_time(window[1], "end"))
    health = "act.health=1.1,1.2" if args.quick else "act.health=1.05:1.25:0.05"
    axes = (parse_vary(health, settings), parse_vary("act.target=1.3,1.5", settings))
    cores = os.cpu_count() or 1
    timings, results = {}, {}
    for jobs in (1, cores):
        t0 = time.perf_counter()
        results[jobs] = run_sweep(settings, axes, series, jobs=jobs)
        timings[jobs] = time.perf_counter() - t0
    if results[1].outcomes != results[cores].outcomes:
        print("the pool's results differ from one process's")
        return 1
    cells = len(results[1].outcomes)
    ticks = sum(len(s) for s in series)
    print(f"| cells | ticks per cell | 1 process | {cores} processes | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {cells} | {ticks:,} | {timings[1]:.2f} s | {timings[cores]:.2f} s | {timings[1] / timings[cores]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
