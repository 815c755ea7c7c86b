"""The daemon in-process: components wired by build_daemon, fed by scripted feeds.

Nothing sleeps to wait for a result: tests wait on events with timeouts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.alerts.content import Alert
from monitor.alerts.message import Message
from monitor.config import load_settings, parse_settings
from monitor.inbox import EngineInbox
from monitor.model import EventKind, PriceTick
from monitor.service import run_daemon
from monitor.store.sqlite import MemoryStore
from monitor.wiring import build_daemon
from strategies import default_registry


class ListNotifier:
    """Collects the alerts of each message; `wait_for` resolves when a matching one arrives."""

    def __init__(self, fail_first: int = 0, name: str = "list"):
        self.name = name
        self.events: list[Alert] = []
        self.messages: list[Message] = []
        self.fail_first = fail_first
        self.attempts = 0
        self._changed = asyncio.Event()

    async def send(self, message: Message) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            raise ConnectionError("notifier down")
        self.messages.append(message)
        self.events.extend(message.alerts)
        self._changed.set()

    async def wait_for(self, pred, timeout: float = 10.0) -> Alert:
        async def find():
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(find(), timeout)


class ScriptedFeed:
    """Pushes its ticks, then idles until cancelled (a live feed does not end)."""

    def __init__(self, ticks: list[PriceTick], name: str = "scripted"):
        self.name = name
        self.symbols = tuple(sorted({t.symbol for t in ticks}))
        self._ticks = ticks

    async def run(self, sink) -> None:
        for t in self._ticks:
            sink(t)
            await asyncio.sleep(0)
        await asyncio.Event().wait()


class PushFeed:
    """A live feed the test drives: `push` hands a tick to the daemon once `run` has started."""

    def __init__(self, symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT"), name: str = "push"):
        self.name = name
        self.symbols = symbols
        self.connected = asyncio.Event()
        self._sink = None

    async def run(self, sink) -> None:
        self._sink = sink
        self.connected.set()
        await asyncio.Event().wait()

    def push(self, *ticks: PriceTick) -> None:
        for t in ticks:
            self._sink(t)


async def until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Waits for a state the daemon reaches by itself (checked each loop turn), or fails after `timeout`."""
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class CrashingFeed:
    def __init__(self, crashes: int, then: list[PriceTick] | None = None):
        self.name = "crashing"
        self.symbols = ("BTC/USDT",)
        self.crashes = crashes
        self.runs = 0
        self._then = then or []

    async def run(self, sink) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError("socket closed")
        await ScriptedFeed(self._then).run(sink)


def crash_ticks(start_ms: int = 1_700_000_000_000) -> list[PriceTick]:
    """BTC and ETH falling 45% over 90 one-minute steps, then holding."""
    out = []
    for n in range(120):
        f = 1 - 0.45 * min(n, 90) / 90
        ts = start_ms + n * 60_000
        out.append(PriceTick("BTC/USDT", 60000 * f, ts, 60000 * f * 0.9999, 60000 * f * 1.0001))
        out.append(PriceTick("ETH/USDT", 3000 * f, ts, 3000 * f * 0.9999, 3000 * f * 1.0001))
    return out


def fast_settings(contract_config: Path, **daemon):
    raw = load_settings(contract_config).model_dump(exclude_none=True)
    raw["daemon"] = {**raw["daemon"], "restart_backoff_s": 0.01, **daemon}
    return parse_settings(raw)


async def run_until(daemon, condition, timeout: float = 15.0) -> int:
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(daemon, stop))
    try:
        await condition()
    finally:
        stop.set()
    return await asyncio.wait_for(task, timeout)


async def test_crash_alerts_and_rebalances(contract_config: Path) -> None:
    notifier = ListNotifier()
    store = MemoryStore()
    d = build_daemon(fast_settings(contract_config), default_registry(), store=store,
                     feeds=[ScriptedFeed(crash_ticks())], notifiers=[(notifier, None)])

    async def condition():
        await notifier.wait_for(lambda e: e.level == "warn" and e.kind == EventKind.FIRING)
        await notifier.wait_for(lambda e: e.level == "act" and e.kind == EventKind.FIRING)
        await asyncio.wait_for(d.settled.wait(), 10)

    assert await run_until(d, condition) == 0
    record = (await store.read_journal("main"))[0]
    assert record["kind"] == "execution" and record["fills"]
    assert record["expected_health"] > record["health_before"]
    warn = next(e for e in notifier.events if e.level == "warn")
    assert warn.dry_run and warn.health < 1.3


async def test_feed_crash_is_restarted(contract_config: Path) -> None:
    feed = CrashingFeed(crashes=2, then=[PriceTick("BTC/USDT", 60000, 1, None, None)])
    d = build_daemon(fast_settings(contract_config), default_registry(), store=MemoryStore(), feeds=[feed],
                     notifiers=[(ListNotifier(), None)])

    async def condition():
        await asyncio.wait_for(d.first_tick.wait(), 10)

    assert await run_until(d, condition) == 0
    assert feed.runs == 3
    assert d.monitor.engine.price_of("BTC") == 60000


async def test_crash_loop_stops_daemon_nonzero(contract_config: Path) -> None:
    feed = CrashingFeed(crashes=1000)
    d = build_daemon(fast_settings(contract_config, max_restarts=3), default_registry(), store=MemoryStore(),
                     feeds=[feed], notifiers=[(ListNotifier(), None)])
    code = await asyncio.wait_for(run_daemon(d, asyncio.Event()), 15)
    assert code == 1
    assert feed.runs == 4  # first run plus max_restarts restarts


async def test_failing_notifier_is_retried(contract_config: Path) -> None:
    notifier = ListNotifier(fail_first=1)
    d = build_daemon(fast_settings(contract_config), default_registry(), store=MemoryStore(),
                     feeds=[ScriptedFeed(crash_ticks())], notifiers=[(notifier, None)])

    async def condition():
        await notifier.wait_for(lambda e: e.level == "warn", timeout=15)

    assert await run_until(d, condition) == 0
    assert notifier.attempts >= 2


async def test_inbox_coalesces_to_newest_per_symbol() -> None:
    inbox = EngineInbox()
    for n in range(1000):
        inbox.put_tick(PriceTick("BTC/USDT", 100 + n, n))
    inbox.put_tick(PriceTick("ETH/USDT", 5, 1))
    inbox.put_control("resync")
    assert len(inbox) == 3
    assert await asyncio.wait_for(inbox.get(), 1) == "resync"  # control first
    btc = await asyncio.wait_for(inbox.get(), 1)
    assert (btc.symbol, btc.price) == ("BTC/USDT", 1099)
    assert (await asyncio.wait_for(inbox.get(), 1)).symbol == "ETH/USDT"
    assert inbox.coalesced == 999 and inbox.received == 1001


def test_non_dry_run_mode_is_refused(contract_config: Path) -> None:
    raw = load_settings(contract_config).model_dump(exclude_none=True)
    raw["execution"]["mode"] = "live"
    raw["feeds"] = [{"name": "s", "symbols": ["BTC/USDT"], "simulated": {"start": {"BTC/USDT": 1.0}}}]
    from monitor.errors import ConfigError
    with pytest.raises(ConfigError, match="execution.mode"):
        build_daemon(parse_settings(raw), default_registry(), store=MemoryStore())
