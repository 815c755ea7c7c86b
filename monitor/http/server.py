"""The HTTP endpoint (aiohttp): /healthz, /metrics, the live status page and its websocket.

Loopback by default. Off loopback every route needs the bearer token, as an
`Authorization: Bearer` header or, for a browser, a `token` query parameter.
Access logging is off: a query string may carry the token.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from importlib import resources

import orjson
import structlog
from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.config import HttpSettings, listen_address
from monitor.daemon import Daemon, blind_count, feed_live, healthy, status_line
from monitor.errors import ConfigError
from monitor.http.metrics import LIVE_WITHIN_S, daemon_registry
from monitor.http.status import snapshot

log = structlog.get_logger("http")
SEND_TIMEOUT_S = 5.0  # a client that cannot take a push this fast is dropped, not waited for


def bearer_token(http: HttpSettings) -> str | None:
    """The token named by token_env; its value never appears in an error or a log line."""
    if http.token_env is None:
        return None
    token = os.environ.get(http.token_env, "")
    if not token:
        raise ConfigError(f"http.token_env: the environment variable {http.token_env} is not set or empty")
    return token


def authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header[:7].lower() == "bearer " else request.query.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


class Collected:
    """Metric families already read, for generate_latest to write out anywhere."""

    def __init__(self, families: list):
        self._families = families

    def collect(self):
        return iter(self._families)


class HttpEndpoint:
    def __init__(self, daemon: Daemon, settings: HttpSettings, token: str | None):
        self.daemon = daemon
        self.settings = settings
        self._token = token
        self._registry = daemon_registry(daemon)
        self._page = resources.files("monitor.http").joinpath("page.html").read_bytes()
        self.clients: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound port (listen may ask for 0)
        self.app = web.Application(middlewares=[self._auth])
        self.app.add_routes([web.get("/healthz", self.healthz), web.get("/metrics", self.metrics),
                             web.get("/", self.page), web.get("/status.json", self.status_json),
                             web.get("/ws", self.websocket)])

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        host, port = listen_address(self.settings.listen)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as err:
            await self._runner.cleanup()
            raise ConfigError(f"http.listen: cannot listen on {self.settings.listen} ({err.strerror or err})") from None
        self.port = self._runner.addresses[0][1]
        log.info("http listening", listen=f"{host}:{self.port}", token_required=self._token is not None)

    async def stop(self) -> None:
        for ws in list(self.clients):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- routes ---------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self._token is not None and not authorized(request, self._token):
            return web.json_response({"error": "unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="collateral-monitor"'})
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the tick path is alive and every account's health is known; else 503."""
        live = healthy(self.daemon, LIVE_WITHIN_S)
        blind = blind_count(self.daemon)
        return web.json_response({"live": live, "blind": blind, "status": status_line(self.daemon)},
                                 status=200 if live and not blind else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        # Read on the loop, between two ticks (a consistent view, a fifth of the cost); the text
        # is written in a thread, so a large scrape does not hold the tick path for its whole length.
        families = Collected(list(self._registry.collect()))
        body = await asyncio.to_thread(generate_latest, families)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def status_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self._payload(), content_type="application/json")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        await ws.send_str(self._payload().decode())
        self.clients.add(ws)
        try:
            async for msg in ws:  # the page sends nothing; reading notices the close
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.discard(ws)
        return ws

    # -- pushes ---------------------------------------------------------------------------
    def _payload(self) -> bytes:
        return orjson.dumps(snapshot(self.daemon, self.settings.page_accounts))

    def _version(self) -> tuple:
        d = self.daemon  # feed liveness changes with time alone: the page's badge must follow it
        return d.ticks_applied, d.changes, sum(d.events.values()), id(d.monitor), \
            tuple(feed_live(d, f.name) for f in d.feeds)

    async def push_loop(self) -> None:
        """At most one push per push_every_s, and only when something changed."""
        last_version, last = None, b""
        while True:
            await asyncio.sleep(self.settings.push_every_s)
            if not self.clients or self._version() == last_version:
                continue
            last_version = self._version()
            payload = self._payload()
            if payload == last:
                continue
            last = payload
            text = payload.decode()
            await asyncio.gather(*(self._send(ws, text) for ws in list(self.clients)))

    async def _send(self, ws: web.WebSocketResponse, text: str) -> None:
        try:
            await asyncio.wait_for(ws.send_str(text), SEND_TIMEOUT_S)
        except (ConnectionError, TimeoutError, RuntimeError):
            self.clients.discard(ws)
            await ws.close()
