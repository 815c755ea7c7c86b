"""Two websocket clients behind one small interface, so the native feed can run
on either and the benchmark can compare them. Their exceptions become
FeedDisconnected at this boundary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import aiohttp
import websockets
from websockets.asyncio.client import connect as ws_connect

MAX_FRAME_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
# A burst already in the socket buffer is read without ever suspending; after this long,
# give the engine task a turn so a tick's decision never waits for the whole burst.
READ_SLICE_S = 0.0002

FrameHandler = Callable[[str | bytes], None]


class FeedDisconnected(Exception):
    """The connection failed or closed; the feed reconnects."""


class WsConnection(Protocol):
    async def send(self, data: bytes) -> None: ...
    async def read(self, on_frame: FrameHandler) -> None: ...  # returns or raises when the connection ends


class _Aiohttp:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        await self._ws.send_str(data.decode())

    async def read(self, on_frame: FrameHandler) -> None:
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        clock, turn = time.perf_counter, time.perf_counter() + READ_SLICE_S
        async for msg in self._ws:
            if msg.type is text or msg.type is binary:
                on_frame(msg.data)
                if clock() > turn:
                    await asyncio.sleep(0)
                    turn = clock() + READ_SLICE_S
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise FeedDisconnected(f"websocket error: {self._ws.exception()}")
        raise FeedDisconnected(f"closed by the server (code {self._ws.close_code})")


class _Websockets:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        await self._ws.send(data.decode())

    async def read(self, on_frame: FrameHandler) -> None:
        clock, turn = time.perf_counter, time.perf_counter() + READ_SLICE_S
        try:
            async for raw in self._ws:
                on_frame(raw)
                if clock() > turn:
                    await asyncio.sleep(0)
                    turn = clock() + READ_SLICE_S
        except websockets.ConnectionClosed as err:
            raise FeedDisconnected(f"closed ({err})") from None
        raise FeedDisconnected(f"closed by the server (code {self._ws.close_code})")


@asynccontextmanager
async def connect_aiohttp(url: str) -> AsyncIterator[WsConnection]:
    try:
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(
                url, autoping=True, heartbeat=None, max_msg_size=MAX_FRAME_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)) as ws:
            yield _Aiohttp(ws)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
        raise FeedDisconnected(f"{type(err).__name__}: {err}") from None


@asynccontextmanager
async def connect_websockets(url: str) -> AsyncIterator[WsConnection]:
    try:
        # our own watchdog judges liveness; protocol pings from the venue are still answered
        async with ws_connect(url, ping_interval=None, max_size=MAX_FRAME_BYTES, compression=None,
                              open_timeout=CONNECT_TIMEOUT_S, close_timeout=2.0) as ws:
            yield _Websockets(ws)
    except (websockets.WebSocketException, OSError, asyncio.TimeoutError) as err:
        raise FeedDisconnected(f"{type(err).__name__}: {err}") from None


CLIENTS = {"aiohttp": connect_aiohttp, "websockets": connect_websockets}
