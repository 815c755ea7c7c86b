"""What alerting costs the tick path, and how fast the manager turns a crash into digests.

    python benchmarks/bench_alerts.py             # 1,000 and 10,000 accounts
    python benchmarks/bench_alerts.py --quick     # 1,000 accounts

One tick takes every account across warn and critical at once (a crash). Timed in
one process, median of several rounds, each on a fresh Monitor:
  tick              Monitor.on_tick: engine + rules, producing the events;
  tick + context    the same, plus what the daemon adds on the tick path for each event:
                    the alert's context (exposures, liquidation prices, freshness) and
                    AlertManager.submit (a put_nowait);
  manager           off the tick path: the policy (dedup, inhibition) and routing of
                    those alerts to 3 channels through an in-memory SQLite outbox; and the
                    longest the event loop (where the engine runs) waited for a turn meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.alerts.build import build_alert_manager  # noqa: E402
from monitor.alerts.content import Alert, describe  # noqa: E402
from monitor.alerts.manager import BATCH_MAX  # noqa: E402
from monitor.alerts.notifiers import ConsoleNotifier  # noqa: E402
from monitor.config import parse_settings  # noqa: E402
from monitor.core import Monitor  # noqa: E402
from monitor.daemon import level_order  # noqa: E402
from monitor.model import LevelEvent, PriceTick  # noqa: E402
from monitor.store.sqlite import MemoryStore  # noqa: E402
from strategies import default_registry  # noqa: E402

T0 = 1_700_000_000_000


def settings(n: int):
    return parse_settings({
        "assets": {"BTC": {"price": "BTC/USDT", "weight": 0.8}, "ETH": {"price": "ETH/USDT", "weight": 0.75},
                   "USDT": {"price": 1.0}},
        "accounts": [{"name": f"acct-{i:05d}", "holdings": {"BTC": 1.0, "ETH": 5.0, "USDT": -36000.0 - i % 7},
                      "levels": [{"name": "warn", "health": 1.3}, {"name": "critical", "health": 1.1}]}
                     for i in range(n)],
        "notifiers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
    })


def crash(s, with_context: bool) -> tuple[float, list[Alert]]:
    m = Monitor(s, default_registry())
    m.on_tick(PriceTick("ETH/USDT", 3000.0, T0))
    m.on_tick(PriceTick("BTC/USDT", 60000.0, T0))
    alerts: list[Alert] = []
    sources = {"BTC/USDT": "bench", "ETH/USDT": "bench"}
    t = time.perf_counter()
    out = m.on_tick(PriceTick("BTC/USDT", 36000.0, T0 + 1000))
    if with_context:
        for ev in out:
            if isinstance(ev, LevelEvent):
                alerts.append(Alert.from_event(ev, describe(m, ev, sources)))
    return time.perf_counter() - t, alerts


async def manage(s, alerts: list[Alert]) -> tuple[float, float]:
    """(time to handle the alerts, the longest the event loop was held meanwhile)."""
    m = Monitor(s, default_registry())
    mgr = build_alert_manager(s, MemoryStore(), level_order(m), [(ConsoleNotifier(n), None) for n in "abc"])
    await mgr.start()
    stall, done = [0.0], asyncio.Event()

    async def probe() -> None:  # stands in for the engine task: how long must it wait for a turn?
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            stall[0] = max(stall[0], now - last)
            last = now
    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    t = time.perf_counter()
    for i in range(0, len(alerts), BATCH_MAX):  # as the manager's task slices a burst
        await mgr.handle(alerts[i:i + BATCH_MAX])
    elapsed = time.perf_counter() - t
    done.set()
    await task
    return elapsed, stall[0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    for n in (1000,) if args.quick else (1000, 10_000):
        s = settings(n)
        base = statistics.median(crash(s, False)[0] for _ in range(args.rounds))
        runs = [crash(s, True) for _ in range(args.rounds)]
        ctx = statistics.median(r[0] for r in runs)
        alerts = runs[0][1]
        managed = [asyncio.run(manage(s, alerts)) for _ in range(args.rounds)]
        mgr = statistics.median(r[0] for r in managed)
        stall = statistics.median(r[1] for r in managed)
        pending = len(alerts)
        print(f"{n:>6} accounts, {pending} events in one tick: tick {base * 1e3:.1f} ms, "
              f"tick + context {ctx * 1e3:.1f} ms ({ctx / base:.2f}x the tick), "
              f"manager {mgr * 1e3:.1f} ms off the tick path ({mgr / base:.2f}x the tick; "
              f"{mgr / pending * 1e6:.0f} µs per event for 3 channels); longest hold of the event loop "
              f"meanwhile {stall * 1e3:.2f} ms ({stall / mgr:.4f} of the manager's time)")


if __name__ == "__main__":
    main()
