"""Telegram control (opt-in): /status, /pause, /resume, /silence from allow-listed chats only.

Long-polls the Bot API's getUpdates. A message from any other chat is ignored and
logged with its chat id, never its content. /pause and /resume set the store's kill
switch; /silence writes a silence to the store (and to the running policy at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import structlog

from monitor.alerts.http import HttpPoster
from monitor.alerts.notifiers import DeliveryError
from monitor.alerts.silences import check_target, new_silence
from monitor.alerts.telegram import TelegramNotifier, api_url
from monitor.durations import parse_duration_ms
from monitor.errors import UserError
from monitor.model import iso_ms, wall_clock_ms
from monitor.store.base import KillSwitch, Silence, StateStore

log = structlog.get_logger("alerts")
HELP = ("Commands: /status | /pause [reason] | /resume | /silence ACCOUNT [LEVEL] DURATION "
        "(e.g. /silence main warn 2h)")


class TelegramControl:
    def __init__(self, notifier: TelegramNotifier, api_base: str, token: str, allowed_chat_ids: list[str],
                 store: StateStore, status: Callable[[], str], levels_of: Callable[[], dict[str, list[str]]],
                 on_silence: Callable[[Silence], None], clock_ms: Callable[[], int] = wall_clock_ms,
                 poll_timeout_s: int = 25, retry_s: float = 5.0):
        self._notifier = notifier
        self._updates_url = api_url(api_base, token, "getUpdates")
        self._allowed = frozenset(allowed_chat_ids)
        self._store = store
        self._status = status
        self._levels_of = levels_of
        self._on_silence = on_silence
        self._clock_ms = clock_ms
        self._poll_timeout_s = poll_timeout_s
        self._retry_s = retry_s
        self._http = HttpPoster(poll_timeout_s + 10)
        self._offset = 0
        self.handled = 0
        self.ignored = 0

    async def run(self) -> None:
        try:
            while True:
                try:
                    updates = await self.poll()
                except DeliveryError as err:
                    log.warning("telegram control: polling failed", reason=err.reason)
                    await asyncio.sleep(self._retry_s)
                    continue
                for update in updates:
                    self._offset = max(self._offset, int(update.get("update_id", 0)) + 1)
                    await self.handle(update)
        finally:
            await self._http.close()

    async def poll(self) -> list[dict]:
        body = {"offset": self._offset, "timeout": self._poll_timeout_s, "allowed_updates": ["message"]}
        reply = await self._http.post(self._updates_url, orjson.dumps(body))
        try:
            data = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise DeliveryError(f"getUpdates: HTTP {reply.status}, not a Bot API reply") from None
        if reply.status != 200 or not data.get("ok"):
            raise DeliveryError(f"getUpdates: HTTP {reply.status} {str(data.get('description', ''))[:200]}")
        return [u for u in data.get("result", []) if isinstance(u, dict)]

    async def handle(self, update: dict) -> None:
        msg = update.get("message") or {}
        chat = str((msg.get("chat") or {}).get("id", ""))
        if chat not in self._allowed:
            self.ignored += 1
            log.warning("telegram control: message from a chat not allow-listed ignored", chat_id=chat)
            return
        text = str(msg.get("text", "")).strip()
        try:
            answer = await self.command(text, chat)
        except UserError as err:
            answer = str(err)
        self.handled += 1
        await self.reply(answer, chat)

    async def reply(self, text: str, chat: str, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                await self._notifier.send_text(text, chat_id=chat)
                return
            except DeliveryError as err:
                if err.retry_after_s is None or attempt == attempts - 1:  # only a 429 is worth waiting for
                    log.warning("telegram control: reply failed", reason=err.reason)
                    return
                await asyncio.sleep(err.retry_after_s)

    async def command(self, text: str, chat: str) -> str:
        words = text.split()
        cmd = words[0].split("@")[0].lower() if words else ""
        now = self._clock_ms()
        if cmd == "/status":
            return self._status()
        if cmd in ("/pause", "/resume"):
            engaged = cmd == "/pause"
            reason = " ".join(words[1:]) or ("paused" if engaged else "resumed") + " from Telegram"
            await self._store.set_kill_switch(KillSwitch(engaged, now, reason, f"telegram:{chat}"))
            log.warning("kill switch set from telegram", engaged=engaged, chat_id=chat)
            return ("Trading paused: no order will be placed until /resume. Monitoring and alerts go on."
                    if engaged else "Trading resumed.")
        if cmd == "/silence":
            if len(words) not in (3, 4):
                raise UserError("usage: /silence ACCOUNT [LEVEL] DURATION, e.g. /silence main warn 2h")
            account, level = words[1], (words[2] if len(words) == 4 else None)
            check_target(account, level, self._levels_of())  # the config in force (a reload may change it)
            silence = new_silence(account, level, parse_duration_ms(words[-1]), now, f"telegram:{chat}")
            await self._store.put_silence(silence)
            self._on_silence(silence)
            return f"Silenced {account}/{level or 'all levels'} until {iso_ms(silence.until_ms)} (id {silence.id})"
        return HELP
