"""An aiohttp application served on a free 127.0.0.1 port: the base of every fake peer in the tests."""

from __future__ import annotations

from aiohttp import web


class LoopbackServer:
    port: int = 0
    _runner: web.AppRunner | None = None

    async def serve(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

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
