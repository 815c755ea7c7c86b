"""sd_notify over a real unix datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from monitor.daemon import healthy
from monitor.model import PriceTick
from monitor.sdnotify import SystemdNotifier
from monitor.service import run_daemon
from monitor.store.sqlite import MemoryStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.test_daemon import ListNotifier, ScriptedFeed, fast_settings


class FakeSystemd:
    """The listening end of $NOTIFY_SOCKET; collects every KEY=VALUE it is sent."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.fields: list[dict[str, str]] = []

    async def wait_for(self, key: str, value: str | None = None, timeout: float = 10, after: int = 0) -> dict[str, str]:
        """The first message (from the `after`-th on) that has `key` (= `value`)."""
        loop = asyncio.get_running_loop()

        async def read():
            while True:
                for f in self.fields[after:]:
                    if key in f and (value is None or f[key] == value):
                        return f
                data = await loop.sock_recv(self.sock, 4096)
                self.fields.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        return await asyncio.wait_for(read(), timeout)


async def test_ready_watchdog_status_stopping(tmp_path: Path, contract_config: Path) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})
    assert notifier.watchdog_interval_s == 0.2
    ticks = [PriceTick("BTC/USDT", 60000, 1), PriceTick("ETH/USDT", 3000, 1)]
    d = build_daemon(fast_settings(contract_config, status_every_s=1), default_registry(), store=MemoryStore(),
                     feeds=[ScriptedFeed(ticks)], notifiers=[(ListNotifier(), None)], notifier=notifier)
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(d, stop))
    ready = await systemd.wait_for("READY", "1")
    assert ready["STATUS"].startswith("1 accounts, worst main health 1.635")  # (57000 + 24750) / 50000
    await systemd.wait_for("WATCHDOG", "1")
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0
    await systemd.wait_for("STOPPING", "1")


async def test_watchdog_withheld_when_engine_stalls_or_feeds_die(contract_config: Path) -> None:
    d = build_daemon(fast_settings(contract_config), default_registry(), store=MemoryStore(),
                     feeds=[ScriptedFeed([])], notifiers=[(ListNotifier(), None)], notifier=SystemdNotifier({}))
    now = time.monotonic()
    d.engine_seen, d.feed_seen["scripted"] = now, now
    assert healthy(d, 5)
    d.engine_seen = now - 10  # the engine loop has not run for 10 s
    assert not healthy(d, 5)
    d.engine_seen, d.feed_seen["scripted"] = now, now - 60  # the only feed silent past its 30 s
    assert not healthy(d, 5)


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = SystemdNotifier({})
    assert not n.enabled and n.watchdog_interval_s is None
    n.ready("x")
    n.watchdog()
    n.stopping()
