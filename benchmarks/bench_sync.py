"""What applying one exchange account sync costs, in price ticks of the same engine.

    python benchmarks/bench_sync.py                 # 10 and 1000 synced accounts
    python benchmarks/bench_sync.py --sizes 5000      # minutes: each first sync rebuilds the columns it enters

A sync replaces one account's book in the engine loop: the venue's state becomes a book
(`book_from_state` + the venue's collateral ratios), then the account is recomputed
exactly and its levels evaluated (`Monitor.replace_book`). It runs on the engine's task,
so its cost is paid on the tick path. Baseline, in the same process and engine: one
price tick (`Monitor.on_tick`) on an asset every account holds. No network: the venue
states are built in memory, as the gateway hands them over.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.accounts.synced import SyncApplier, Synced  # noqa: E402
from monitor.config import parse_settings  # noqa: E402
from monitor.core import Monitor  # noqa: E402
from monitor.exchange.venues import VenueState  # noqa: E402
from monitor.model import PriceTick  # noqa: E402
from strategies import default_registry  # noqa: E402


def settings(n: int):
    account = {"model": "unified", "source": "bybit", "api_key_env": "K", "api_secret_env": "S",
               "borrow_mmr": {"USDT": 0.05},
               "levels": [{"name": "warn", "mm_rate": 0.5}]}
    return parse_settings({
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.95}, "ETH": {"price": "ETH/USDT", "weight": 0.9},
                   "USDT": {"price": 1.0}},
        "accounts": [{**account, "name": f"a{i}"} for i in range(n)],
    })


def per_call_ns(fn, rounds: int) -> float:
    samples = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for r in range(rounds):
            fn(r)
        samples.append((time.perf_counter_ns() - t0) / rounds)
    return statistics.median(samples)


def run(n: int, rounds: int) -> None:
    s = settings(n)
    m = Monitor(s, default_registry())
    applier = SyncApplier(s)
    tiers = {"BTC": ((0.0, 0.95), (10.0, 0.5)), "ETH": ((0.0, 0.9),)}
    ts = 1_700_000_000_000
    m.on_tick(PriceTick("BTC/USDT", 60000.0, ts))
    m.on_tick(PriceTick("ETH/USDT", 3000.0, ts))
    states = [VenueState({"BTC": 1.0 + i % 7 / 10, "ETH": 5.0, "USDT": -40000.0 - i}, {}, (), 0.2, ts, tiers)
              for i in range(n)]
    for i in range(n):  # every account holds BTC before timing
        m.replace_book(applier.book(m, Synced(f"a{i}", states[i])))

    clock = itertools.count(ts + 1)  # every tick newer than the last: none is skipped as out of order

    def tick(r: int) -> None:
        m.on_tick(PriceTick("BTC/USDT", 60000.0 + (r % 100), next(clock)))

    def sync(r: int) -> None:
        i = r % n
        m.replace_book(applier.book(m, Synced(f"a{i}", states[i])))

    tick_ns = per_call_ns(tick, rounds)
    sync_ns = per_call_ns(sync, rounds)
    assert m.bad_ticks == 0
    print(f"{n:>6} accounts: tick {tick_ns / 1000:8.1f} us, sync {sync_ns / 1000:8.1f} us "
          f"-> one sync = {sync_ns / tick_ns:6.2f} ticks")


def main() -> None:
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # timing, not logging
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 1000])
    p.add_argument("--rounds", type=int, default=500)
    args = p.parse_args()
    for n in args.sizes:
        run(n, args.rounds)


if __name__ == "__main__":
    main()
