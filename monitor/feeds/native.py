"""The native feeds: a venue's public streams parsed with orjson straight into ticks.

Binance (combined streams) and Bybit v5 (public tickers) differ only in their
`Venue`: how to subscribe, how to parse, and whether the client must ping.
One connection per endpoint (e.g. spot; USDⓈ-M public and market), each with its own
watchdog: a connection silent for `watchdog_s` is dropped and dialled again with
backoff and jitter, and its streams subscribed again. While any is down, the
REST fallback polls its symbols.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from monitor.feeds import binance_wire, bybit_wire
from monitor.feeds.backoff import Backoff, RetryLog
from monitor.feeds.base import FeedEvent, FeedEventSink, TickSink
from monitor.feeds.binance_wire import Endpoint
from monitor.feeds.rest_fallback import RestFallback
from monitor.feeds.stats import DEFAULT_MAX_SKEW_MS, FeedStats, TickGate, now_ms
from monitor.feeds.ws_clients import CLIENTS, FeedDisconnected, WsConnection

log = structlog.get_logger("feed")


@dataclass(frozen=True)
class Venue:
    subscribe_messages: Callable[[list[str]], list[bytes]]
    parser: Callable[[dict, TickGate], Any]  # (routes, gate) -> an object with feed(raw, recv_ms)
    ping: bytes | None = None  # an application-level ping the venue requires ...
    ping_every_s: float = 0.0  # ... this often


VENUES = {
    "binance": Venue(binance_wire.subscribe_messages, binance_wire.BinanceParser),
    "bybit": Venue(bybit_wire.subscribe_messages, bybit_wire.BybitParser, bybit_wire.PING, bybit_wire.PING_EVERY_S),
}


class NativeFeed:
    def __init__(self, name: str, endpoints: list[Endpoint], *, venue: str = "binance", client: str = "aiohttp",
                 watchdog_s: float = 15.0, backoff: Callable[[], Backoff] = lambda: Backoff(0.5, 30.0),
                 fallback: RestFallback | None = None, max_skew_s: float = DEFAULT_MAX_SKEW_MS / 1000,
                 clock_ms: Callable[[], int] = now_ms) -> None:
        self.name = name
        self.venue = VENUES[venue]
        self.endpoints = endpoints
        self.symbols: tuple[str, ...] = tuple(s for e in endpoints for s, _ in e.routes.values())
        self.client = client
        self._connect = CLIENTS[client]
        self.watchdog_s = watchdog_s
        self._backoff = backoff
        self._fallback = fallback
        self._max_skew_ms = round(max_skew_s * 1000)
        self._clock_ms = clock_ms  # receipt time (injected by tests)
        self.stats = FeedStats()
        self.events: FeedEventSink | None = None  # set by the daemon
        self._down: set[str] = {e.url for e in endpoints}  # endpoint URLs without a live connection
        self._retry_log = RetryLog(venue)

    def down_symbols(self) -> list[str]:
        return [s for e in self.endpoints if e.url in self._down for s, _ in e.routes.values()]

    async def run(self, sink: TickSink) -> None:
        gate = TickGate(self.name, self.stats, sink, self._max_skew_ms, self._clock_ms)
        async with asyncio.TaskGroup() as tg:
            for endpoint in self.endpoints:
                tg.create_task(self._keep_connected(endpoint, gate))
            if self._fallback is not None:
                tg.create_task(self._fallback.run(gate, self.down_symbols))

    async def _keep_connected(self, endpoint: Endpoint, gate: TickGate) -> None:
        backoff = self._backoff()
        while True:
            reason = await self._session(endpoint, gate, backoff)
            self._set_down(endpoint, reason, backoff.cap_s)
            self.stats.reconnects += 1
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, endpoint: Endpoint, gate: TickGate, backoff: Backoff) -> str:
        """One connection's life; returns why it ended."""
        parser = self.venue.parser(endpoint.routes, gate)
        stats = self.stats
        last = [time.monotonic()]  # this connection's last frame (the watchdog's clock)

        def on_frame(raw: str | bytes) -> None:
            mono = last[0] = time.monotonic()
            stats.messages += 1
            stats.last_message_mono = mono
            stats.last_message_ms = recv = gate.clock_ms()
            if endpoint.url in self._down:
                self._set_up(endpoint)
                backoff.reset()
            parser.feed(raw, recv)

        try:
            async with self._connect(endpoint.url) as conn:
                for message in self.venue.subscribe_messages(endpoint.streams):
                    await conn.send(message)
                pinger = asyncio.ensure_future(self._ping(conn))
                try:
                    return await self._read_watched(conn, on_frame, last)
                finally:
                    pinger.cancel()
                    await asyncio.gather(pinger, return_exceptions=True)
        except FeedDisconnected as err:
            return str(err)

    async def _ping(self, conn: WsConnection) -> None:
        if self.venue.ping is None:
            return
        while True:
            await asyncio.sleep(self.venue.ping_every_s)
            await conn.send(self.venue.ping)

    async def _read_watched(self, conn: WsConnection, on_frame: Callable, last: list[float]) -> str:
        reader = asyncio.ensure_future(conn.read(on_frame))
        try:
            while True:
                await asyncio.wait({reader}, timeout=self.watchdog_s / 4)
                if reader.done():
                    reader.result()  # raises FeedDisconnected
                    return "closed"
                if time.monotonic() - last[0] > self.watchdog_s:
                    self.stats.watchdog_trips += 1
                    self._event("watchdog", f"no message for {self.watchdog_s:g}s")
                    return f"silent for {self.watchdog_s:g}s"
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def _set_down(self, endpoint: Endpoint, reason: str, retry_s: float) -> None:
        first = endpoint.url not in self._down
        self._down.add(endpoint.url)
        self.stats.connected = False
        if first:
            log.warning("feed disconnected", feed=self.name, endpoint=endpoint.url, reason=reason[:300])
            self._event("disconnected", reason)
        else:
            self._retry_log.failed(f"at {endpoint.url}", retry_s, reason, feed=self.name)
        if self._fallback is not None:
            self._fallback.wake.set()

    def _set_up(self, endpoint: Endpoint) -> None:
        self._down.discard(endpoint.url)
        self._retry_log.reached(f"at {endpoint.url}")
        self.stats.connected = not self._down
        log.info("feed connected", feed=self.name, endpoint=endpoint.url, streams=len(endpoint.routes))
        self._event("connected", endpoint.url)

    def _event(self, kind: str, detail: str) -> None:
        if self.events is not None:
            self.events(FeedEvent(self.name, kind, detail))
