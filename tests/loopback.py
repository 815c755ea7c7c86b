"""An aiohttp application served on a free 127.0.0.1 port: the base of every fake peer in the tests."""

from __future__ import annotations

from aiohttp import web


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serves `app` on a free loopback port: its runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


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
