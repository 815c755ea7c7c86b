"""An aiohttp application served on a free 127.0.0.1 port: the base of every fake peer in the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serves `app` on a free loopback port: its runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


@asynccontextmanager
async def venue_on_loopback(fake, env: dict[str, str], monkeypatch) -> AsyncIterator[tuple[object, str]]:
    """A fake exchange served on loopback, its test keys in the environment: (fake, base url)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runner, port = await start_app(fake.app())
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class LoopbackServer:
    port: int = 0
    _runner: web.AppRunner | None = None

    async def serve(self, app: web.Application) -> None:
        self._runner, self.port = await start_app(app)

    async def shut(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    rest_url = url

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class SignedVenue:
    """What the fake exchanges share: a private route records the request, then checks its key
    and signature the venue's way (`authenticate`) before the handler sees its parameters."""

    requests: list[tuple[str, str]]

    async def authenticate(self, request: web.Request) -> tuple[dict | None, web.Response | None]:
        """The request's parameters, or the venue's own error answer for a bad key or signature."""
        raise NotImplementedError

    def private(self, handler: Callable[[dict], Awaitable[web.Response]]):
        async def wrapped(request: web.Request) -> web.Response:
            self.requests.append((request.method, request.path))
            params, error = await self.authenticate(request)
            return error if error is not None else await handler(params)
        return wrapped
