"""One HTTP POST for the notifiers, with aiohttp's errors translated at this boundary.

aiohttp's exceptions may carry the request URL, which for Slack and Telegram holds
the secret; only the exception's type name leaves this module.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

import aiohttp

from monitor.alerts.notifiers import DeliveryError


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: str
    retry_after_s: float | None  # the Retry-After header in seconds from now, as the service said it


class HttpPoster:
    """Owns an aiohttp session, opened on first use (constructors do no I/O)."""

    def __init__(self, timeout_s: float):
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> Reply:
        return await self.request("POST", url, body, {"Content-Type": "application/json", **(headers or {})})

    async def get(self, url: str) -> Reply:
        return await self.request("GET", url)

    async def request(self, method: str, url: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        try:
            async with self.session().request(method, url, data=body, headers=headers) as resp:
                text = await resp.text(errors="replace")
                return Reply(resp.status, text, retry_after(resp.headers.get("Retry-After")))
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            raise DeliveryError("timed out") from None
        except (aiohttp.ClientError, OSError, ValueError) as err:
            raise DeliveryError(f"connection failed ({type(err).__name__})") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


_SECONDS = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def retry_after(value: object, now_s: float | None = None) -> float | None:
    """Seconds a service asks us to wait: Retry-After as delay-seconds or an HTTP-date (RFC 9110
    §10.2.3), or Telegram's `retry_after` number. None when absent or unreadable: our own backoff
    applies. Not bounded here (0, negative, a year): the delivery worker clamps it."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and _SECONDS.fullmatch(value.strip()):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # the asctime form carries no zone; HTTP dates are always GMT
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    else:
        return None
    return seconds if math.isfinite(seconds) else None


def status_error(reply: Reply, what: str) -> DeliveryError:
    """A non-2xx reply as an error: 429 waits as told, 400 is this message's fault, the rest are retried."""
    detail = f"{what}: HTTP {reply.status} {reply.body[:200].strip()}".strip()
    if reply.status == 429:
        return DeliveryError(detail, retry_after_s=reply.retry_after_s)
    return DeliveryError(detail, rejected=reply.status == 400)
