"""Helpers for live-feed tests: a collecting sink and daemons wired to real feeds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from monitor.config import FeedSettings, load_settings, parse_settings
from monitor.feeds.live import build_live_feed
from monitor.model import PriceTick


class Collector:
    """A TickSink that records ticks; `wait_for` resolves once a predicate over them holds."""

    def __init__(self) -> None:
        self.ticks: list[PriceTick] = []
        self._changed = asyncio.Event()

    def __call__(self, tick: PriceTick) -> None:
        self.ticks.append(tick)
        self._changed.set()

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        async def loop():
            while not predicate(self.ticks):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)


def live_feed(server, driver: str, symbols: list[str], name: str = "binance", exchange: str = "binance", **keys):
    keys = {"watchdog_s": 5.0, "backoff_s": 0.05, "backoff_max_s": 0.2, "rest_poll_s": 0, **keys}
    fs = FeedSettings(name=name, driver=driver, exchange=exchange, symbols=symbols, ws_url=server.ws_url,
                      rest_url=server.rest_url, **keys)
    return build_live_feed(fs)


def settings_with(contract_config: Path, feeds: list[dict] | None = None, **account):
    raw = load_settings(contract_config).model_dump(exclude_none=True)
    raw["daemon"] = {**raw["daemon"], "restart_backoff_s": 0.01}
    raw["accounts"] = [{**a, **account} for a in raw["accounts"]]
    if feeds is not None:
        raw["feeds"] = feeds
    return parse_settings(raw)


async def start_task(coro) -> asyncio.Task:
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0)
    return task


async def cancel(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
