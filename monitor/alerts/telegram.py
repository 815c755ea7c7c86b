"""Telegram Bot API sendMessage, HTML parse mode with every dynamic field escaped.

Replies are {"ok": true, "result": {...}} or {"ok": false, "error_code", "description",
"parameters": {"retry_after"}}. A 400 "can't parse entities" means our markup is
wrong; the message is then sent again as plain text rather than lost.
"""

from __future__ import annotations

import orjson

from monitor.alerts.http import HttpPoster, Reply, retry_after
from monitor.alerts.message import Message
from monitor.alerts.notifiers import DeliveryError
from monitor.alerts.render import PLAIN, TELEGRAM_HTML, render


def api_url(api_base: str, token: str, method: str) -> str:
    return f"{api_base.rstrip('/')}/bot{token}/{method}"


class TelegramNotifier:
    def __init__(self, name: str, token: str, chat_id: str, api_base: str = "https://api.telegram.org",
                 timeout_s: float = 10.0):
        self.name = name
        self.chat_id = chat_id
        self._url = api_url(api_base, token, "sendMessage")
        self._http = HttpPoster(timeout_s)

    async def send(self, message: Message) -> None:
        await self.send_text(render(message, TELEGRAM_HTML), html=True, fallback=render(message, PLAIN))

    async def send_text(self, text: str, html: bool = False, fallback: str | None = None,
                        chat_id: str | None = None) -> None:
        body = {"chat_id": chat_id or self.chat_id, "text": text, "disable_web_page_preview": True}
        if html:
            body["parse_mode"] = "HTML"
        reply = await self._http.post(self._url, orjson.dumps(body))
        err = reply_error(reply)
        if err is None:
            return
        if html and fallback is not None and "can't parse entities" in err.reason:
            await self.send_text(fallback[:4096], chat_id=chat_id)
            return
        raise err

    async def close(self) -> None:
        await self._http.close()


def reply_error(reply: Reply) -> DeliveryError | None:
    try:
        data = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return DeliveryError(f"telegram: HTTP {reply.status}, not a Bot API reply")
    if reply.status == 200 and data.get("ok") is True:
        return None
    desc = str(data.get("description", ""))[:200]
    params = data.get("parameters")
    told = params.get("retry_after") if isinstance(params, dict) else None
    if reply.status == 429 or told is not None:  # ResponseParameters.retry_after: seconds, as Retry-After
        wait = retry_after(told)
        return DeliveryError(f"telegram: {desc}", retry_after_s=wait if wait is not None else reply.retry_after_s)
    chat_gone = "chat not found" in desc or reply.status in (401, 403, 404)
    return DeliveryError(f"telegram: HTTP {reply.status} {desc}", rejected=reply.status == 400 and not chat_gone)
