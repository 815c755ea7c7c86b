"""What the state store costs the daemon: each write it makes, per backend.

The baseline is the in-memory SQLite store in the same process (the same code as the
file store, minus the file). Redis runs as a local redis-server on a free port, started
here (the `redis-server` binary must be installed); its figures include the loopback
round trip. "buffered" is Redis during an outage: the write joins the in-order queue.

    python benchmarks/bench_store.py [--n 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from monitor.store.base import AccountSnapshot, AlertRecord, Commit, JournalEntry, OutboxItem
from monitor.store.redis import RedisStore
from monitor.store.sqlite import MemoryStore, SqliteStore

BOOK = {"BTC": {"qty": 1.5, "debt": 0.0, "perp_size": 0.0, "perp_cost": 0.0, "perp_mm": 0.0, "borrow_mmr": 0.0},
        "USDT": {"qty": 0.0, "debt": 40000.0, "perp_size": 0.0, "perp_cost": 0.0, "perp_mm": 0.0, "borrow_mmr": 0.0}}
RECORD = {"plan_id": "x" * 24, "level": "act", "strategy": "repay_debt", "health_before": 1.1,
          "expected_health": 1.4, "fills": [{"symbol": "BTC/USDT", "side": "sell", "amount": 0.5,
                                             "price": 40000.0, "fee": 20.0}], "repays": [], "errors": []}


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


async def per_op_us(store, n: int) -> dict[str, float]:
    out = {}
    ops = {
        "journal append": lambda i: store.journal("execution", f"acct{i % 100}", i, RECORD),
        "snapshot put": lambda i: store.put_snapshot(AccountSnapshot(f"acct{i}", i, 1.3, None, BOOK, "d")),
        "plan claim": lambda i: store.claim_plan(f"plan{i}", "acct", i),
        "outbox add + done": lambda i: _outbox(store, i),
        "alert transition: record + 3 channels, one commit": lambda i: store.commit(Commit(
            alerts=(AlertRecord(f"acct{i}", "act", i, i, 1.1, {"alert": {"health": 1.1}}),),
            outbox=tuple(OutboxItem(c, f"t{i}", i, {"text": "health 1.1"}) for c in ("slack", "tg", "hook")))),
        "plan outcome: journal + claim closed + snapshot, one commit": lambda i: store.commit(Commit(
            journal=(JournalEntry("execution", f"acct{i % 100}", i, RECORD),),
            plans_finished=((f"plan{i}", "done", {}),),
            snapshots=(AccountSnapshot(f"acct{i}", i, 1.3, None, BOOK, "d"),))),
    }
    for name, op in ops.items():
        t0 = time.perf_counter()
        for i in range(n):
            await op(i)
        out[name] = (time.perf_counter() - t0) / n * 1e6
    # The periodic pass over every account, as SnapshotWriter does it: chunks of 500.
    snaps = [AccountSnapshot(f"acct{i}", i, 1.3, None, BOOK, "d") for i in range(n)]
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        await store.put_snapshots(snaps[start:start + 500])
    out["snapshot, in chunks of 500"] = (time.perf_counter() - t0) / n * 1e6
    return out


async def _outbox(store, i: int) -> None:
    await store.outbox_add(OutboxItem("slack", f"k{i}", i, {"text": "health 1.1"}))
    await store.outbox_done("slack", f"k{i}")


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            stores = {"memory (baseline)": MemoryStore(), "sqlite file": SqliteStore(Path(tmp) / "s.sqlite"),
                      "redis": RedisStore(url, "bench")}
            results = {name: await per_op_us(s, n) for name, s in stores.items()}
            outage = RedisStore(url, "bench-outage", spill_path=Path(tmp) / "spill.jsonl", timeout_s=0.2)
            proc.terminate()
            proc.wait()
            await outage.journal("execution", "a", 0, RECORD)  # notices the outage
            t0 = time.perf_counter()
            for i in range(n):
                await outage.journal("execution", f"acct{i % 100}", i, RECORD)
            buffered = (time.perf_counter() - t0) / n * 1e6
            for s in stores.values():
                if s.name != "redis":
                    await s.close()
        finally:
            if proc.poll() is None:
                proc.terminate()
    base = results["memory (baseline)"]
    print(f"{n} operations each, µs per operation (× the in-memory baseline)\n")
    print("| operation | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for op in base:
        cells = [f"{r[op]:.1f} (×{r[op] / base[op]:.1f})" for r in results.values()]
        print(f"| {op} | " + " | ".join(cells) + " |")
    print(f"\nRedis down, journal append buffered in order: {buffered:.1f} µs "
          f"(×{buffered / base['journal append']:.1f} the baseline)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000)
    asyncio.run(main(p.parse_args().n))
