"""What the service layer costs: tick-path telemetry, a /metrics scrape, a status-page snapshot, a reload.

    python benchmarks/bench_service.py                 # 1k and 10k accounts
    python benchmarks/bench_service.py --sizes 100000

Each figure is measured in one process against a baseline run in the same process:
  telemetry: the engine loop's per-tick work (handle) with the latency observation and
             the feed sink's counters, vs handle alone, on the same ticks;
  scrape:    generate_latest over the daemon's collector, vs one pass of status_line
             (the cheapest full read of the same state);
  snapshot:  the status page's JSON (200 least healthy accounts), vs one tick;
  reload:    a config reload applied in the engine task (new Monitor + carry over), vs
             building the Monitor from scratch (what check-config does).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from monitor.config import parse_settings  # noqa: E402
from monitor.core import Monitor  # noqa: E402
from monitor.daemon import status_line  # noqa: E402
from monitor.http.metrics import daemon_registry  # noqa: E402
from monitor.http.status import snapshot  # noqa: E402
from monitor.model import PriceTick, wall_clock_ms  # noqa: E402
from monitor.reload import Reconfigure, build_notifiers  # noqa: E402
from monitor.service import handle  # noqa: E402
from monitor.store.sqlite import MemoryStore  # noqa: E402
from monitor.telemetry import LatencyHistogram, TickRate  # noqa: E402
from monitor.wiring import build_daemon  # noqa: E402
from strategies import default_registry  # noqa: E402

SYMBOLS = {"BTC": ("BTC/USDT", 60000.0), "ETH": ("ETH/USDT", 3000.0), "SOL": ("SOL/USDT", 150.0)}


class IdleFeed:
    name = "bench"
    symbols = tuple(s for s, _ in SYMBOLS.values())

    async def run(self, sink) -> None:
        await asyncio.Event().wait()


def synthetic_settings(n: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    accounts = []
    for i in range(n):
        held = {a: float(rng.uniform(0.1, 5) * 60000 / p) for a, (_, p) in SYMBOLS.items() if rng.random() < 0.7} or {"BTC": 1.0}
        value = sum(q * SYMBOLS[a][1] * 0.9 for a, q in held.items())
        debt = value / float(rng.lognormal(np.log(1.8), 0.2))
        accounts.append({"name": f"acc{i}", "holdings": {**held, "USDT": -debt},
                         "levels": [{"name": "warn", "health": 1.3}, {"name": "critical", "health": 1.05}]})
    return {"assets": {**{a: {"price": s, "weight": 0.9} for a, (s, _) in SYMBOLS.items()}, "USDT": {"price": 1.0}},
            "accounts": accounts, "http": {"listen": "127.0.0.1:0"}, "daemon": {"queue_size": 10_000_000},
            "feeds": [{"name": "bench", "symbols": [s for s, _ in SYMBOLS.values()],
                       "simulated": {"start": {s: p for s, p in SYMBOLS.values()}}}]}


def ticks(count: int, start_ms: int, seed: int = 1) -> list[PriceTick]:
    """A random walk, 20 ms apart from start_ms (each run needs later times: older ticks are refused)."""
    rng = np.random.default_rng(seed)
    prices = {s: p for s, p in SYMBOLS.values()}
    out, now = [], start_ms
    for n in range(count):
        symbol = list(prices)[n % len(prices)]
        prices[symbol] *= float(np.exp(rng.normal(0, 0.002)))
        out.append(PriceTick(symbol, prices[symbol], now + n * 20))
    return out


def per_call(fn, repeat: int) -> float:
    """Median seconds per call over `repeat` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tick_loop(d, stream: list[PriceTick], observed: bool) -> float:
    """Seconds for the engine loop's handling of `stream`, with or without the telemetry."""
    hist, rate = LatencyHistogram(), TickRate()
    lag: dict[str, int] = {}
    start = time.perf_counter()
    if observed:
        for t in stream:
            rate.observe()  # what the feed sink adds
            lag["bench"] = wall_clock_ms() - t.ts_ms
            began = time.perf_counter()  # what the engine loop adds
            handle(d, t)
            if type(t) is PriceTick:
                hist.observe(time.perf_counter() - began)
    else:
        for t in stream:
            handle(d, t)
    return time.perf_counter() - start


async def bench(n: int, n_ticks: int) -> None:
    raw = synthetic_settings(n)
    settings = parse_settings(raw)
    d = build_daemon(settings, default_registry(), store=MemoryStore(), feeds=[IdleFeed()])
    for symbol, price in SYMBOLS.values():
        handle(d, PriceTick(symbol, price, wall_clock_ms()))
    start = wall_clock_ms()
    streams = [ticks(n_ticks, start + r * n_ticks * 20) for r in range(11)]
    tick_loop(d, streams[0], True)  # warm up
    plain, observed = [], []
    for r in range(5):  # interleaved, so drift hits both alike
        plain.append(tick_loop(d, streams[1 + 2 * r], False))
        observed.append(tick_loop(d, streams[2 + 2 * r], True))
    assert d.monitor.bad_ticks == 0, "every timed tick must be applied"
    base, with_t = statistics.median(plain), statistics.median(observed)
    stream = streams[0]
    one_tick = base / len(stream)

    registry = daemon_registry(d)
    scrape = per_call(lambda: generate_latest(registry), 5)
    on_loop = per_call(lambda: list(registry.collect()), 5)  # what the handler does on the event loop
    scrape_size = len(generate_latest(registry))
    status = per_call(lambda: status_line(d), 5)
    snap = per_call(lambda: orjson.dumps(snapshot(d, 200)), 5)

    def reload_once() -> None:
        msg = Reconfigure(settings, default_registry(), build_notifiers)
        handle(d, msg)
        assert msg.done.result() is None

    reload_s = per_call(reload_once, 3)
    build_s = per_call(lambda: Monitor(settings, default_registry()), 3)

    print(f"\n{n:,} accounts, {len(stream):,} ticks per run")
    print(f"  telemetry on the tick path: {one_tick * 1e6:.1f} µs/tick plain, "
          f"{with_t / len(stream) * 1e6:.1f} µs/tick observed: x{with_t / base:.3f}")
    print(f"  /metrics scrape: {scrape * 1e3:.1f} ms ({scrape_size / 1024:.0f} KiB), "
          f"x{scrape / status:.0f} a status_line pass, {scrape / n * 1e6:.1f} µs per account; "
          f"on the event loop {on_loop * 1e3:.1f} ms (x{on_loop / scrape:.2f}), the rest in a thread")
    print(f"  status page snapshot (200 accounts): {snap * 1e3:.1f} ms = {snap / one_tick:.0f} ticks")
    print(f"  reload applied: {reload_s * 1e3:.0f} ms, x{reload_s / build_s:.2f} a Monitor built from scratch "
          f"({build_s * 1e3:.0f} ms)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--ticks", type=int, default=20000)
    args = p.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    for n in args.sizes:
        asyncio.run(bench(n, args.ticks))


if __name__ == "__main__":
    main()
