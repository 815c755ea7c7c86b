"""One HTTP POST for the notifiers, with aiohttp's errors translated at this boundary.

aiohttp's exceptions may carry the request URL, which for Slack and Telegram holds
the secret; only the exception's type name leaves this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from monitor.alerts.notifiers import DeliveryError


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: str
    retry_after_s: float | None  # the Retry-After header, when it is a number of seconds


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


def retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def status_error(reply: Reply, what: str) -> DeliveryError:
    """A non-2xx reply as an error: 429 waits as told, 400 is this message's fault, the rest are retried."""
    detail = f"{what}: HTTP {reply.status} {reply.body[:200].strip()}".strip()
    if reply.status == 429:
        return DeliveryError(detail, retry_after_s=reply.retry_after_s)
    return DeliveryError(detail, rejected=reply.status == 400)
