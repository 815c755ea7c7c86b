"""One delivery worker per channel, off the tick path.

The worker's in-memory queue is authoritative while the daemon runs; the store's
outbox mirrors it (an item is added when created, marked done once the channel
accepted it), so a restart delivers what was pending late rather than never. Items
waiting together go out as one message (a digest) after `group_wait_s`, within the
channel's rate limit; failures are retried with exponential backoff, or after the
service's own retry_after / Retry-After, bounded to [retry_base_s, retry_after_max_s].
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from monitor.alerts.message import from_payload, message_of
from monitor.alerts.notifiers import DeliveryError, Notifier
from monitor.alerts.ratelimit import RateLimiter
from monitor.store.base import OutboxItem, StateStore

log = structlog.get_logger("alerts")
MAX_BATCH = 2000  # items in one message: a crash over thousands of accounts is still a few digests
JITTER = 0.1  # up to this fraction is added to each retry wait: channels and instances do not retry in step


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    group_wait_s: float = 2.0
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    failing_after_s: float = 120.0  # a failure streak this long is reported on the other channels
    retry_after_max_s: float = 300.0  # the longest wait a service's Retry-After / retry_after gets


def retry_delay(policy: DeliveryPolicy, attempt: int, asked_s: float | None, u: float) -> float:
    """The wait before retry `attempt` (1, 2, ...), with jitter `u` in [0, 1). What the service asked
    is clamped to [retry_base_s, retry_after_max_s]: 0 or a negative would hammer it, a day would park
    the channel. Otherwise exponential backoff up to retry_max_s."""
    if asked_s is None:
        wait, cap = policy.retry_base_s * 2.0 ** min(attempt - 1, 64), policy.retry_max_s
    else:
        wait, cap = asked_s, policy.retry_after_max_s
    return min(max(wait * (1 + JITTER * u), policy.retry_base_s), cap)


# (channel, failing, reason): failing True once a streak lasts failing_after_s, False when it ends,
# None for a message the service refused outright.
Report = Callable[[str, bool | None, str], None]


class ChannelWorker:
    def __init__(self, notifier: Notifier, store: StateStore, limiter: RateLimiter, policy: DeliveryPolicy,
                 report: Report, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random):
        self.notifier = notifier
        self.name = notifier.name
        self._store = store
        self._limiter = limiter
        self._policy = policy
        self._report = report
        self._clock = clock
        self._rng = rng  # the retry jitter (seeded in tests)
        self._pending: deque[tuple[float, OutboxItem]] = deque()  # (when it arrived, item)
        self._keys: set[str] = set()  # pending here: one copy of each
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.messages_sent = 0
        self.items_sent = 0
        self.failures = 0
        self._failing_since: float | None = None
        self._reported = False

    def __len__(self) -> int:
        return len(self._pending)

    def report_to(self, report: Report) -> None:
        """Where channel-health reports go (a reload hands a new worker to the running manager)."""
        self._report = report

    def held(self) -> list[OutboxItem]:
        """What waits here for delivery (a reload hands it to the channel's new worker)."""
        return [item for _, item in self._pending]

    def put(self, item: OutboxItem) -> bool:
        return self.put_many([item]) == 1

    def put_many(self, items: list[OutboxItem]) -> int:
        """Items that arrive together start one group_wait together (one digest); returns how many were new."""
        now, added = self._clock(), 0
        for item in items:
            if item.key not in self._keys:
                self._keys.add(item.key)
                self._pending.append((now, item))
                added += 1
        if added:
            self._idle.clear()
            self._wake.set()
        return added

    async def idle(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            while not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            wait = self._pending[0][0] + self._policy.group_wait_s - self._clock()
            if wait > 0:  # let the rest of a burst arrive: one digest, not one message each
                await asyncio.sleep(wait)
            batch = [item for _, item in list(self._pending)[:MAX_BATCH]]
            await self._deliver(batch)
            for _ in batch:
                _, item = self._pending.popleft()
                self._keys.discard(item.key)
            await self._mark_done(batch)

    async def _deliver(self, batch: list[OutboxItem]) -> None:
        parts = []
        for item in batch:
            try:
                parts.append(from_payload(item.payload))
            except (KeyError, TypeError, ValueError) as err:  # written by another version: skip, never crash-loop
                log.error("outbox item unreadable, skipped", channel=self.name, key=item.key,
                          error=f"{type(err).__name__}: {err}")
        if not parts:
            return
        message = message_of(parts)
        attempt = 0
        while True:
            await self._limiter.acquire()
            try:
                await self.notifier.send(message)
                self._succeeded(len(batch))
                return
            except asyncio.CancelledError:
                raise
            except DeliveryError as err:
                if err.rejected and len(batch) > 1:  # a digest too big or with one bad part: one by one
                    log.warning("digest refused by channel, sending its alerts one by one", channel=self.name,
                                reason=err.reason, items=len(batch))
                    for item in batch:
                        await self._deliver([item])
                    return
                if err.rejected:  # retrying the same message cannot help: report it, do not block the channel
                    log.error("alert refused by channel", channel=self.name, reason=err.reason, items=len(batch))
                    self._report(self.name, None, err.reason)
                    return
                reason, asked = err.reason, err.retry_after_s
            except Exception as err:  # a notifier's bug must not stop the channel
                reason, asked = type(err).__name__, None
            attempt += 1
            self.failures += 1
            delay = retry_delay(self._policy, attempt, asked, self._rng())
            self._failed(reason)
            log.warning("alert delivery failed, retrying", channel=self.name, reason=reason, attempt=attempt,
                        retry_in_s=round(delay, 3), items=len(batch),
                        **({"asked_s": round(asked, 3)} if asked is not None else {}))
            await self._wait(delay, reason)

    async def _wait(self, delay: float, reason: str) -> None:
        """Sleeps before a retry. A streak that reaches failing_after_s meanwhile is reported then,
        not at the next failure, which a long Retry-After would put off."""
        if not self._reported and self._failing_since is not None:
            due = max(self._failing_since + self._policy.failing_after_s - self._clock(), 0.0)
            if due < delay:
                await asyncio.sleep(due)
                delay -= due
                self._report_failing(reason)
        await asyncio.sleep(delay)

    def _succeeded(self, items: int) -> None:
        self.messages_sent += 1
        self.items_sent += items
        if self._reported:
            self._report(self.name, False, "")
        self._failing_since, self._reported = None, False

    def _failed(self, reason: str) -> None:
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since >= self._policy.failing_after_s:
            self._report_failing(reason)

    def _report_failing(self, reason: str) -> None:
        if not self._reported:
            self._reported = True
            self._report(self.name, True, reason)

    async def _mark_done(self, batch: list[OutboxItem]) -> None:
        try:  # the channel has it: it must never be sent again, even after a restart
            for n, item in enumerate(batch):
                await asyncio.shield(self._store.outbox_done(self.name, item.key))
                if n % 64 == 63:
                    await asyncio.sleep(0)  # inline SQLite writes: leave the engine its turns
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("outbox not updated", channel=self.name, error=type(err).__name__)
