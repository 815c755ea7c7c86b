"""Live feed drivers under a firehose, in one run, with 10,000 accounts loaded.

    python benchmarks/bench_feeds.py                 # 100,000 frames per driver, 10,000 accounts
    python benchmarks/bench_feeds.py --quick         # 20,000 frames, 2,000 accounts

A local Binance-format server (tests/binance_server.py) runs in its own process
and, on each SUBSCRIBE, writes N pre-encoded bookTicker frames for 5 symbols as
fast as the socket takes them (the combined-stream envelope for the native
driver, raw frames for ccxt, as Binance does). Each client is then timed:

  bare floor   a websocket client (aiohttp or websockets) + orjson that only parses
  native       NativeFeed for Binance (aiohttp, websockets): frames -> ticks
  ccxt         CcxtFeed (ccxt.pro watch_bids_asks, unmodified): frames -> ticks
  ... + engine the same driver -> the daemon's EngineInbox -> an engine task running
               Monitor.on_tick (engine + rules, no strategies) for every tick it takes

msgs/s is frames consumed per second, first frame to last; with the engine, it
keeps up by coalescing to the newest price per symbol, as the daemon does.
Frame to decision runs from the frame's arrival at our code (ccxt: at its
handle_message, after its JSON decode) to the end of rule evaluation for the
tick it became (driver rows: to the tick leaving the driver), for every tick
the engine applied. Ratios compare clients of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from bench_replay import COINS, make_settings  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

from monitor.config import FeedSettings  # noqa: E402
from monitor.core import Monitor  # noqa: E402
from monitor.feeds import binance_wire  # noqa: E402
from monitor.feeds.live import build_live_feed  # noqa: E402
from monitor.inbox import EngineInbox  # noqa: E402
from monitor.model import PriceTick  # noqa: E402
from strategies import default_registry  # noqa: E402
from tests.binance_server import BinanceServer, book_ticker  # noqa: E402

START = {"BTC": 60000.0, "ETH": 3000.0, "BNB": 400.0, "SOL": 150.0, "XRP": 0.6}


# ---------------------------------------------------------------- the firehose (own process)
def ws_frame(payload: bytes) -> bytes:
    """An unmasked server-to-client text frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def firehose_prices(n: int, seed: int) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(seed)
    walk = {c: START[c] for c in COINS}
    out = []
    for i, step in enumerate(rng.normal(0, 0.0005, n).tolist()):
        coin = COINS[i % len(COINS)]
        walk[coin] *= 1 + step
        # rounded as the wire prints them (8 decimals), so parsed prices compare equal
        out.append((coin, round(walk[coin] * 0.99995, 8), round(walk[coin] * 1.00005, 8)))
    return out


class Firehose(BinanceServer):
    def __init__(self, n: int, seed: int) -> None:
        super().__init__([(c, "USDT") for c in COINS])
        prices = firehose_prices(n, seed)
        self.blobs = {}
        for combined in (False, True):
            frames = []
            for u, (coin, bid, ask) in enumerate(prices):
                data = book_ticker(coin + "USDT", bid, ask, update_id=u + 1)
                stream = f"{coin.lower()}usdt@bookTicker"
                frames.append(ws_frame(orjson.dumps({"stream": stream, "data": data} if combined else data)))
            self.blobs[combined] = frames

    async def _request(self, conn, text: str) -> None:
        await super()._request(conn, text)
        if orjson.loads(text).get("method") == "SUBSCRIBE":
            asyncio.get_running_loop().create_task(self._blast(conn))

    async def _blast(self, conn) -> None:
        transport = conn.ws._req.transport
        frames = self.blobs[conn.combined]
        for i in range(0, len(frames), 500):
            transport.write(b"".join(frames[i:i + 500]))
            while transport.get_write_buffer_size() > 1 << 20:
                await asyncio.sleep(0.0005)


def serve(n: int, seed: int, port_q: mp.Queue) -> None:
    async def main() -> None:
        server = Firehose(n, seed)
        await server.start()
        port_q.put(server.port)
        await asyncio.Event().wait()
    asyncio.run(main())


# ---------------------------------------------------------------- clients
class Run:
    """What one client measured."""

    def __init__(self, n: int, finals: dict[str, float]) -> None:
        self.n = n
        self.finals = finals  # symbol -> the firehose's last mid: seeing it means all frames were consumed
        self.pending = set(finals)
        self.done = asyncio.Event()
        self.first_ns = 0
        self.last_ns = 0
        self.latency_ns: list[int] = []
        self.engine_ns: list[int] = []  # Monitor.on_tick alone
        self.applied = 0

    def arrived(self) -> int:
        now = time.perf_counter_ns()
        if not self.first_ns:
            self.first_ns = now
        return now

    def seen(self, symbol: str, price: float) -> None:
        if symbol in self.pending and price == self.finals[symbol]:
            self.pending.discard(symbol)
            if not self.pending:
                self.last_ns = time.perf_counter_ns()
                self.done.set()

    def row(self, name: str) -> dict:
        secs = (self.last_ns - self.first_ns) / 1e9
        lat = sorted(self.latency_ns)
        pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000) if lat else (lambda q: float("nan"))
        eng = sorted(self.engine_ns)
        return {"name": name, "msgs_s": self.n / secs, "p50_us": pct(0.5), "p99_us": pct(0.99),
                "applied": self.applied, "engine_p50_us": eng[len(eng) // 2] / 1000 if eng else None}


async def bare_floor(url: str, client: str, run: Run) -> None:
    """Parses every frame (orjson + the two floats); nothing else."""
    def on_frame(raw) -> None:
        t0 = run.arrived()
        d = orjson.loads(raw)["data"]
        mid = (float(d["b"]) + float(d["a"])) * 0.5
        run.latency_ns.append(time.perf_counter_ns() - t0)
        run.seen(d["s"], mid)

    sub = orjson.dumps({"method": "SUBSCRIBE", "params": [f"{c.lower()}usdt@bookTicker" for c in COINS], "id": 1})
    if client == "aiohttp":
        async with aiohttp.ClientSession() as s, s.ws_connect(url + "/stream") as ws:
            await ws.send_str(sub.decode())
            async for msg in ws:
                if "stream" in msg.data:
                    on_frame(msg.data)
                if run.done.is_set():
                    return
    else:
        async with ws_connect(url + "/stream", compression=None, max_size=None) as ws:
            await ws.send(sub.decode())
            async for raw in ws:
                if "stream" in raw:
                    on_frame(raw)
                if run.done.is_set():
                    return


def instrument_native(arrival: list[int], run: Run) -> None:
    """Frame arrival time at our parser (restored by `restore_native`)."""
    original = binance_wire.BinanceParser.feed

    def feed(self, raw, recv_ms):
        arrival[0] = run.arrived()
        original(self, raw, recv_ms)
    feed.original = original
    binance_wire.BinanceParser.feed = feed


def restore_native() -> None:
    binance_wire.BinanceParser.feed = binance_wire.BinanceParser.feed.original


async def through_engine(feed, monitor: Monitor | None, run: Run, arrival_of) -> None:
    """The daemon's tick path: feed -> EngineInbox (coalescing) -> engine task -> on_tick.
    Without a monitor: the driver alone, every tick into a sink that only notes it."""
    inbox = EngineInbox()
    born: dict[PriceTick, int] = {}

    def sink(tick: PriceTick) -> None:
        born[tick] = arrival_of(tick)
        inbox.put_tick(tick)

    def driver_only(tick: PriceTick) -> None:
        run.latency_ns.append(time.perf_counter_ns() - arrival_of(tick))
        run.seen(tick.symbol, tick.price)

    async def engine() -> None:
        while True:
            tick = await inbox.get()
            t0 = time.perf_counter_ns()
            monitor.on_tick(tick)
            done = time.perf_counter_ns()
            run.engine_ns.append(done - t0)
            run.latency_ns.append(done - born.pop(tick))
            run.applied += 1
            run.seen(tick.symbol, tick.price)

    if monitor is None:
        tasks = [asyncio.ensure_future(feed.run(driver_only))]
    else:
        tasks = [asyncio.ensure_future(feed.run(sink)), asyncio.ensure_future(engine())]

    try:
        await asyncio.wait_for(run.done.wait(), 600)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def live(driver: str, url: str, **keys):
    return build_live_feed(FeedSettings(name=driver, driver=driver, symbols=[f"{c}/USDT" for c in COINS],
                                        ws_url=url, rest_url=url.replace("ws://", "http://"), rest_poll_s=0,
                                        watchdog_s=60, **keys))


async def run_all(url: str, n: int, finals: dict[str, float], monitor_factory) -> list[dict]:
    rows = []
    by_id = {s.replace("/", ""): p for s, p in finals.items()}  # the bare floor sees venue ids
    for client in ("aiohttp", "websockets"):
        run = Run(n, by_id)
        await bare_floor(url, client, run)
        rows.append(run.row(f"bare floor ({client} + orjson, parse only)"))
        print("measured:", rows[-1]["name"], file=sys.stderr, flush=True)
    for engine in (False, True):
        for client in ("aiohttp", "websockets"):
            arrival = [0]
            run = Run(n, finals)
            instrument_native(arrival, run)
            try:
                await through_engine(live("native", url, client=client), monitor_factory() if engine else None,
                                     run, lambda t: arrival[0])
            finally:
                restore_native()
            rows.append(run.row(f"native ({client})" + (" + engine" if engine else "")))
            print("measured:", rows[-1]["name"], file=sys.stderr, flush=True)
        rows.append(await ccxt_run(url, n, finals, monitor_factory() if engine else None))
        print("measured:", rows[-1]["name"], file=sys.stderr, flush=True)
    return rows


async def ccxt_run(url: str, n: int, finals: dict[str, float], monitor: Monitor | None) -> dict:
    run = Run(n, finals)
    arrivals: dict[str, int] = {}
    feed = live("ccxt", url)
    make = feed._factory

    def instrumented(types):
        ex = make(types)
        original = ex.handle_message

        def handle_message(client, message):
            if isinstance(message, dict) and "s" in message:
                arrivals[message["s"]] = run.arrived()
            return original(client, message)
        ex.handle_message = handle_message
        return ex
    feed._factory = instrumented
    await through_engine(feed, monitor, run, lambda t: arrivals[t.symbol.replace("/", "")])
    return run.row("ccxt.pro (watch_bids_asks)" + (" + engine" if monitor else ""))


def print_table(rows: list[dict], accounts: int, n: int) -> None:
    floor = next(r for r in rows if r["name"].startswith("bare floor (aiohttp"))
    print(f"\n{n:,} bookTicker frames over 5 symbols, {accounts:,} accounts; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| client | msgs/s | vs bare floor (aiohttp) | vs ccxt | engine decisions | frame to decision p50 | p99 "
          "| engine + rules p50 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ccxt = next(c for c in rows if c["name"].startswith("ccxt") and c["name"].endswith("engine")
                    == r["name"].endswith("engine"))
        eng = f"{r['engine_p50_us']:,.0f} µs" if r["engine_p50_us"] is not None else "-"
        print(f"| {r['name']} | {r['msgs_s']:,.0f} | {r['msgs_s'] / floor['msgs_s']:.0%} | "
              f"{r['msgs_s'] / ccxt['msgs_s']:.1f}x | {r['applied'] or '-'} | {r['p50_us']:,.1f} µs | "
              f"{r['p99_us']:,.1f} µs | {eng} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.accounts = 20_000, 2_000
    prices = firehose_prices(args.frames, args.seed)
    finals = {}
    for coin, bid, ask in prices:
        finals[f"{coin}/USDT"] = (bid + ask) * 0.5
    settings = make_settings(args.accounts, START, args.seed)
    registry = default_registry()

    def monitor_factory() -> Monitor:
        return Monitor(settings, registry, act=False)

    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    proc = ctx.Process(target=serve, args=(args.frames, args.seed, port_q), daemon=True)
    proc.start()
    try:
        url = f"ws://127.0.0.1:{port_q.get(timeout=120)}"
        rows = asyncio.run(run_all(url, args.frames, finals, monitor_factory))
    finally:
        proc.terminate()
    print_table(rows, args.accounts, args.frames)


if __name__ == "__main__":
    main()
