"""Alert manager: events in from the tick path; policy, routing and durable delivery off it.

`submit()` is called on the tick path and never blocks. The manager's task applies
the policy (dedup, repeats, inhibition, silences: monitor/alerts/policy.py), persists
active alerts, routes each notification to its channels and hands it to their
delivery workers (monitor/alerts/delivery.py) through the store's outbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from monitor.alerts.content import Alert, AlertContext
from monitor.alerts.delivery import ChannelWorker
from monitor.alerts.message import Notice, item_payload
from monitor.alerts.policy import STALE, AlertPolicy, Changes
from monitor.alerts.routing import Route, channels_for
from monitor.model import LevelEvent, wall_clock_ms
from monitor.store.base import OutboxItem, Silence, StateStore

log = structlog.get_logger("alerts")
PENDING_LOAD_MAX = 1_000_000  # outbox items read back per channel at start
BATCH_MAX = 1000  # alerts decided in one step (about 10 ms of work)


@dataclass(frozen=True, slots=True)
class _NoticeRequest:
    notice: Notice
    exclude: str | None


@dataclass(frozen=True, slots=True)
class _Reconcile:
    """Once every account is priced after a start: alerts restored from the store whose level is no
    longer breached resolved while the daemon was away; `now` holds their resolved notices."""
    now: Callable[[str], tuple[frozenset[str], Alert] | None]  # account -> (levels breached, a RESOLVED template)


class AlertManager:
    def __init__(self, workers: list[ChannelWorker], routes: list[Route], policy: AlertPolicy, store: StateStore,
                 *, queue_size: int = 10_000, clock_ms: Callable[[], int] = wall_clock_ms,
                 refresh: Callable[[Alert], Alert] | None = None, silence_poll_s: float = 5.0):
        """`refresh(alert)` gives a reminder the account's current figures (None: as it first fired)."""
        self.workers = {w.name: w for w in workers}
        self.routes = routes
        self.policy = policy
        self.store = store
        self.queue: asyncio.Queue[Alert | _NoticeRequest | _Reconcile] = asyncio.Queue(queue_size)
        self._clock_ms = clock_ms
        self._refresh = refresh
        self._silence_poll_s = silence_poll_s
        self._latest_ms = 0  # event time of the newest alert: repeats follow event time
        self._loaded = False
        self.ready = asyncio.Event()  # pending outbox and active alerts loaded
        self.dropped = 0
        self._group: asyncio.TaskGroup | None = None  # while running: where channel workers live
        self._worker_tasks: dict[str, asyncio.Task] = {}

    # -- called from anywhere, never blocks ---------------------------------------------
    def submit(self, event: LevelEvent, context: AlertContext | None = None) -> None:
        self._put(Alert.from_event(event, context))

    def notice(self, key: str, text: str, exclude: str | None = None) -> None:
        """A daemon-level notice to every channel (but `exclude`): a channel failing, the store down."""
        now = self.now_ms()
        self._put(_NoticeRequest(Notice(f"notice\x1f{key}\x1f{now}", text, now), exclude))

    def reconcile(self, now: Callable[[str], tuple[frozenset[str], Alert] | None]) -> None:
        self._put(_Reconcile(now))

    def _put(self, item: Alert | _NoticeRequest | _Reconcile) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("alert queue full, notification dropped", dropped=self.dropped)

    def now_ms(self) -> int:
        return max(self._clock_ms(), self._latest_ms)

    @property
    def sent(self) -> int:
        return sum(w.items_sent for w in self.workers.values())

    def pending(self) -> int:
        return self.queue.qsize() + sum(len(w) for w in self.workers.values())

    def add_silence(self, silence: Silence) -> None:
        """A silence set in-process (Telegram /silence) applies at once, before the next poll."""
        self.policy.silences = [*self.policy.silences, silence]

    # -- reports from the delivery workers and the store ------------------------------------
    def channel_report(self, channel: str, failing: bool | None, reason: str) -> None:
        if failing is None:
            self.notice(f"refused:{channel}", f"Channel {channel} refused a notification: {reason}", exclude=channel)
        elif failing:
            log.error("alert channel failing", channel=channel, reason=reason)
            self.notice(f"failing:{channel}", f"Channel {channel} is failing ({reason}); its alerts are kept "
                        "and will be delivered when it recovers", exclude=channel)
        else:
            log.info("alert channel recovered", channel=channel)
            self.notice(f"recovered:{channel}", f"Channel {channel} recovered", exclude=channel)

    def store_outage(self, down: bool, detail: str) -> None:
        text = (f"State store unavailable ({detail}): writes are buffered, trading may pause" if down
                else f"State store back ({detail})")
        self.notice("store-down" if down else "store-up", text)

    # -- the manager's task ---------------------------------------------------------------
    async def start(self) -> None:
        """Loads active alerts, silences and undelivered notifications (delivered first)."""
        if self._loaded:
            return
        for name, records in (("alerts", self.store.alerts), ("silences", lambda: self.store.silences(self.now_ms()))):
            try:
                loaded = await records()
            except Exception as err:  # an unreadable store must not silence alerting
                log.error("alert state not loaded", what=name, error=type(err).__name__)
                continue
            if name == "alerts":
                self.policy.load(loaded)
            else:
                self.policy.silences = loaded
        for name, worker in self.workers.items():
            try:
                pending = await self.store.outbox_pending(name, PENDING_LOAD_MAX)
            except Exception as err:
                log.error("outbox not loaded", channel=name, error=type(err).__name__)
                continue
            for item in pending:
                worker.put(item)
            if pending:
                log.info("undelivered alerts from before the restart", channel=name, items=len(pending))
        self._loaded = True
        self.ready.set()

    async def run(self) -> None:
        await self.start()
        async with asyncio.TaskGroup() as tg:
            self._group = tg
            for w in self.workers.values():
                self._start_worker(w)
            tg.create_task(self._repeat_loop(), name="alerts:repeat")
            tg.create_task(self._silence_loop(), name="alerts:silences")
            while True:
                batch = [await self.queue.get()]
                # What one tick produced is decided together (a warn and a critical at once page
                # only the critical), in slices that leave the engine its turns.
                while not self.queue.empty() and len(batch) < BATCH_MAX:
                    batch.append(self.queue.get_nowait())
                try:
                    await self.handle(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # one bad alert must not stop alerting
                    log.error("alert handling failed", error=f"{type(err).__name__}: {err}", exc_info=err)
                finally:
                    for _ in batch:
                        self.queue.task_done()

    async def handle(self, batch: list[Alert | _NoticeRequest | _Reconcile]) -> None:
        alerts = [x for x in batch if isinstance(x, Alert)]
        for r in (x for x in batch if isinstance(x, _Reconcile)):
            alerts += self._gone(r)
        for item in batch:
            if isinstance(item, _NoticeRequest):
                for name in self.workers:
                    if name != item.exclude:
                        await self._enqueue(name, item.notice.key, item.notice.ts_ms, item_payload(item.notice))
        if alerts:
            self._latest_ms = max(self._latest_ms, *(a.ts_ms for a in alerts))
            await self.apply(self.policy.step(alerts, self.now_ms()))

    def _gone(self, r: _Reconcile) -> list[Alert]:
        out = []
        for a in self.policy.firing():
            acc, level = a.alert.account, a.alert.level
            state = r.now(acc) if level != STALE else None
            if state is None or level in state[0]:
                continue
            template = state[1]
            out.append(replace(template, level=level, since_ms=a.alert.ts_ms, min_health=a.worst_health))
        return out

    async def apply(self, changes: Changes) -> None:
        for n, active in enumerate(changes.put):
            await self._store_write(self.store.put_alert(active.record()))
            if n % 64 == 63:
                await asyncio.sleep(0)
        for account, level in changes.delete:
            await self._store_write(self.store.delete_alert(account, level))
        for alert in changes.notify:
            if alert.repeat and self._refresh is not None:
                alert = self._refresh(alert)
            for name in channels_for(self.routes, alert):
                await self._enqueue(name, alert.key, alert.ts_ms, item_payload(alert))
            # The SQLite store writes inline: a burst of thousands must leave the engine its turns.
            await asyncio.sleep(0)

    async def _enqueue(self, channel: str, key: str, ts_ms: int, payload: dict) -> None:
        item = OutboxItem(channel, key, ts_ms, payload)
        try:
            if not await self.store.outbox_add(item):
                return  # in the outbox already, or delivered: exactly once
        except asyncio.CancelledError:
            raise
        except Exception as err:  # memory is authoritative while running: deliver anyway
            log.warning("outbox write failed", channel=channel, error=type(err).__name__)
        self.workers[channel].put(item)

    async def _store_write(self, aw) -> None:
        try:
            await aw
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("alert state not saved", error=type(err).__name__)

    async def _repeat_loop(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.apply(self.policy.due(self.now_ms()))

    async def _silence_loop(self) -> None:
        """Silences set from the CLI (or another instance) reach the policy within silence_poll_s."""
        while True:
            await asyncio.sleep(self._silence_poll_s)
            try:
                self.policy.silences = await self.store.silences(self.now_ms())
            except asyncio.CancelledError:
                raise
            except Exception as err:  # keep the last known silences while the store is away
                log.debug("silences not refreshed", error=type(err).__name__)

    def _start_worker(self, w: ChannelWorker) -> None:
        if self._group is not None:
            self._worker_tasks[w.name] = self._group.create_task(w.run(), name=f"alerts:{w.name}")

    def reconfigure(self, new: AlertManager, unchanged: frozenset[str] = frozenset()) -> None:
        """A config reload: `new` was built from the new config. Routing, repeats and level order
        apply at once; what is firing stays firing. A channel named in `unchanged` (or with the
        same notifier) keeps its worker and rate limits; a new or changed one starts, and takes
        over what the old one still held; a removed one stops (its undelivered items stay in
        the store's outbox)."""
        self.routes = new.routes
        self.policy.retune(new.policy)
        for name, old in list(self.workers.items()):
            replacement = new.workers.get(name)
            if replacement is not None and (name in unchanged or replacement.notifier is old.notifier):
                continue
            task = self._worker_tasks.pop(name, None)
            if task is not None:
                task.cancel()
            del self.workers[name]
            if replacement is not None:
                for item in old.held():
                    replacement.put(item)
        for name, w in new.workers.items():
            if name not in self.workers:
                self.workers[name] = w
                self._start_worker(w)

    # -- shutdown ---------------------------------------------------------------------------
    async def drain(self) -> None:
        """Returns once every queued alert was handled and every channel is idle."""
        await self.queue.join()
        await asyncio.gather(*(w.idle() for w in self.workers.values()))

    async def close(self) -> None:
        for w in self.workers.values():
            close = getattr(w.notifier, "close", None)
            if close is not None:
                await close()

