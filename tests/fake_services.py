"""Local HTTP servers that behave like Slack's incoming webhooks, Telegram's Bot API and a
generic webhook receiver, for the alerting tests. Each records what it received and when
(monotonic), and can be scripted to answer 429 / 500 / hang / refuse.

The fakes validate what they get as the real services do: Slack checks the block kit
limits and (stricter than Slack, so escaping bugs show up) raw <, > or & in mrkdwn;
Telegram parses HTML entities and answers "can't parse entities" on bad markup, and
enforces its rate limits (one message a second per chat, 20 a minute per group) with 429.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import orjson
from aiohttp import web

from tests.loopback import LoopbackServer

HANG = "hang"


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class FakeServer(LoopbackServer):
    """A scripted aiohttp server on 127.0.0.1; `script` answers requests in order, then `default`
    (None: the normal answer)."""
    script: deque = field(default_factory=deque)
    default: Any = None
    received: list[Received] = field(default_factory=list)
    hung: list[asyncio.Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._changed = asyncio.Event()
        self.closing = False

    def wake(self) -> None:
        """Lets long-held requests see that the server is closing."""

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> FakeServer:
        app = web.Application()
        app.add_routes(self.routes())
        await self.serve(app)
        return self

    async def stop(self) -> None:
        self.closing = True
        self.wake()
        for ev in self.hung:
            ev.set()
        await self.shut()

    async def record(self, request: web.Request) -> Received:
        r = Received(request.path, await request.read(), dict(request.headers), time.monotonic())
        self.received.append(r)
        self._changed.set()
        return r

    async def scripted(self) -> Any:
        """The next scripted answer; HANG waits until the server stops (a peer that never answers)."""
        action = self.script.popleft() if self.script else self.default
        if action == HANG:
            ev = asyncio.Event()
            self.hung.append(ev)
            await ev.wait()
        return action

    async def wait_for(self, pred, timeout: float = 10.0) -> None:
        async def loop():
            while not pred(self):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)


def retry_header(value: Any) -> dict[str, str]:
    """A 429's Retry-After as scripted: seconds, an HTTP-date, any text, or None for no header."""
    return {} if value is None else {"Retry-After": str(value)}


# -- Slack ------------------------------------------------------------------------------------
SLACK_PATH = "/services/T0001/B0001/abcdefSECRETwebhook"
_RAW_MARKUP = re.compile(r"[<>]|&(?!(amp|lt|gt);)")


def slack_problem(payload: Any) -> str | None:
    if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
        return "no_text"
    blocks = payload.get("blocks", [])
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for b in blocks:
        t = b.get("text", {})
        if b.get("type") == "header" and (t.get("type") != "plain_text" or len(t.get("text", "")) > 150):
            return "invalid_blocks"
        if b.get("type") == "section" and len(t.get("text", "")) > 3000:
            return "invalid_blocks"
        if t.get("type") == "mrkdwn" and _RAW_MARKUP.search(t.get("text", "")):
            return "invalid_payload"
    if _RAW_MARKUP.search(payload.get("text", "")):
        return "invalid_payload"
    return None


class FakeSlack(FakeServer):
    """Script items: "ok" | ("429", Retry-After header value, None for none) | "500" | HANG | "404"."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/services/{a}/{b}/{c}", self.post)]

    @property
    def webhook_url(self) -> str:
        return self.url + SLACK_PATH

    @property
    def accepted(self) -> list[dict]:
        return [r.json for r, ok in zip(self.received, self.outcomes) if ok]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.outcomes: list[bool] = []

    async def post(self, request: web.Request) -> web.Response:
        r = await self.record(request)
        action = await self.scripted()
        resp = self._answer(request, r, action)
        self.outcomes.append(resp.status == 200)
        return resp

    def _answer(self, request: web.Request, r: Received, action: Any) -> web.Response:
        if request.path != SLACK_PATH or action == "404":
            return web.Response(status=404, text="no_service")
        if isinstance(action, tuple) and action[0] == "429":
            return web.Response(status=429, text="rate_limited", headers=retry_header(action[1]))
        if action == "500":
            return web.Response(status=500, text="rollup_error")
        try:
            problem = slack_problem(orjson.loads(r.body))
        except orjson.JSONDecodeError:
            problem = "invalid_payload"
        if problem:
            return web.Response(status=400, text=problem)
        return web.Response(text="ok")


# -- Telegram ---------------------------------------------------------------------------------
TELEGRAM_TOKEN = "123456:SECRET-token-ABCdef"
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a", "tg-spoiler", "blockquote"}
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


class _Entities(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.error: str | None = None
        self.length = 0

    def handle_starttag(self, tag, attrs):
        if tag not in _TAGS:
            self.error = self.error or f"unsupported start tag \"{tag}\""
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.error = self.error or f"unmatched end tag \"{tag}\""

    def handle_data(self, data):
        self.length += len(data.encode("utf-16-le")) // 2

    def handle_entityref(self, name):
        self.length += 1

    handle_charref = handle_entityref


def telegram_html_problem(text: str) -> tuple[str | None, int]:
    """Bot API HTML rules: only known tags, properly nested; every & starts an entity; a bare < is an error."""
    for m in re.finditer("&", text):
        if not _ENTITY.match(text, m.start()):
            return f"Can't find end of the entity starting at byte offset {m.start()}", 0
    for m in re.finditer("<", text):
        if not re.match(r"</?[a-z-]+(\s[^<>]*)?>", text[m.start():]):
            return f"Unexpected character at byte offset {m.start()}", 0
    p = _Entities()
    p.feed(text)
    p.close()
    if p.error or p.stack:
        return p.error or f"can't find end tag corresponding to start tag \"{p.stack[-1]}\"", 0
    return None, p.length


class FakeTelegram(FakeServer):
    """Script items: "ok" | ("429", parameters.retry_after, None for none) | "500" | HANG. Enforces
    Telegram's rate limits."""

    def __init__(self, chats: tuple[str, ...] = ("-1001234567890",), enforce_limits: bool = True):
        super().__init__()
        self.chats = set(chats)
        self.enforce_limits = enforce_limits
        self.sent: list[dict] = []  # accepted sendMessage bodies
        self.errors: list[tuple[int, str]] = []
        self.updates: list[dict] = []
        self._sent_at: dict[str, deque] = defaultdict(deque)
        self._update_added = asyncio.Event()
        self._message_id = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/bot{token}/sendMessage", self.send_message),
                web.post("/bot{token}/getUpdates", self.get_updates)]

    def _fail(self, code: int, description: str, retry_after: int | None = None) -> web.Response:
        self.errors.append((code, description))
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=code)

    async def send_message(self, request: web.Request) -> web.Response:
        r = await self.record(request)
        action = await self.scripted()
        if request.match_info["token"] != TELEGRAM_TOKEN:
            return self._fail(401, "Unauthorized")
        if isinstance(action, tuple) and action[0] == "429":
            return self._fail(429, f"Too Many Requests: retry after {action[1]}", action[1])
        if action == "500":
            return self._fail(500, "Internal Server Error")
        body = r.json
        chat = str(body.get("chat_id"))
        if chat not in self.chats:
            return self._fail(400, "Bad Request: chat not found")
        text = body.get("text") or ""
        length = len(text.encode("utf-16-le")) // 2
        if body.get("parse_mode") == "HTML":
            problem, length = telegram_html_problem(text)
            if problem:
                return self._fail(400, f"Bad Request: can't parse entities: {problem}")
        elif body.get("parse_mode") is not None:
            return self._fail(400, "Bad Request: unsupported parse_mode in this fake")
        if not text.strip():
            return self._fail(400, "Bad Request: message text is empty")
        if length > 4096:
            return self._fail(400, "Bad Request: message is too long")
        wait = self._rate_wait(chat)
        if wait:
            return self._fail(429, f"Too Many Requests: retry after {wait}", wait)
        self._message_id += 1
        self.sent.append(body)
        return web.json_response({"ok": True, "result": {"message_id": self._message_id,
                                                         "chat": {"id": int(chat)}, "date": int(time.time()),
                                                         "text": text}})

    def _rate_wait(self, chat: str) -> int:
        if not self.enforce_limits:
            return 0
        now, q = time.monotonic(), self._sent_at[chat]
        while q and now - q[0] > 60:
            q.popleft()
        if q and now - q[-1] < 1.0:
            return 1
        if chat.startswith("-") and len(q) >= 20:
            return int(60 - (now - q[0])) + 1
        q.append(now)
        return 0

    def wake(self) -> None:
        self._update_added.set()

    def add_update(self, chat_id: int, text: str) -> None:
        uid = len(self.updates) + 1000
        self.updates.append({"update_id": uid, "message": {"message_id": uid, "date": int(time.time()),
                                                            "chat": {"id": chat_id, "type": "private"},
                                                            "text": text}})
        self._update_added.set()

    async def get_updates(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TELEGRAM_TOKEN:
            return self._fail(401, "Unauthorized")
        body = orjson.loads(await request.read() or b"{}")
        offset, timeout = int(body.get("offset", 0)), float(body.get("timeout", 0))
        deadline = time.monotonic() + timeout
        while True:
            fresh = [u for u in self.updates if u["update_id"] >= offset]
            if fresh or time.monotonic() >= deadline or self.closing:
                return web.json_response({"ok": True, "result": fresh})
            self._update_added.clear()
            try:
                await asyncio.wait_for(self._update_added.wait(), deadline - time.monotonic())
            except TimeoutError:
                pass


# -- generic webhook and heartbeat receiver ---------------------------------------------------------
class FakeWebhook(FakeServer):
    """Script items: "ok" | "500" | ("429", Retry-After or None) | HANG. Accepts POST (alerts) and GET
    (heartbeats)."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/hook", self.handle), web.get("/ping/{check}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        await self.record(request)
        action = await self.scripted()
        if action == "500":
            return web.Response(status=500, text="down")
        if isinstance(action, tuple) and action[0] == "429":
            return web.Response(status=429, headers=retry_header(action[1]))
        return web.Response(status=200, text="accepted")
