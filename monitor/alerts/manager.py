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
from monitor.model import EventKind, LevelEvent, wall_clock_ms
from monitor.store.base import Commit, OutboxItem, Silence, StateStore

log = structlog.get_logger("alerts")
PENDING_LOAD_MAX = 1_000_000  # outbox items read back per channel at start
BATCH_MAX = 1000  # queue items taken at once
SLICE = 32  # alerts decided and committed without a pause (a few ms): the engine keeps its turns


@dataclass(frozen=True, slots=True)
class _Burst:
    alerts: tuple[Alert, ...]


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
        self.queue: asyncio.Queue[Alert | _Burst | _NoticeRequest | _Reconcile] = asyncio.Queue(queue_size)
        self._clock_ms = clock_ms
        self._refresh = refresh
        self._silence_poll_s = silence_poll_s
        self._latest_ms = 0  # event time of the newest alert: repeats follow event time
        self._loaded = False
        self._unread: set[str] = set()
        self.ready = asyncio.Event()  # pending outbox and active alerts loaded
        self.dropped = 0
        self._group: asyncio.TaskGroup | None = None  # while running: where channel workers live
        self._worker_tasks: dict[str, asyncio.Task] = {}
        self._closing: set[asyncio.Task] = set()  # notifiers of channels a reload replaced, being closed
        self._apply_lock = asyncio.Lock()  # the repeat loop and the queue both apply changes
        # With several instances on one state only the leader notifies (see take_over): each instance
        # sees a transition at its own tick, so their deliveries would carry different ids.
        self.leading: Callable[[], bool] | None = None  # None: the only instance
        self.store_away: Callable[[], bool] = lambda: False  # then nobody can lead: all notify
        self._caught_up = True  # false from standby until take_over has adopted the stored alerts

    # -- called from anywhere, never blocks ---------------------------------------------
    def submit(self, event: LevelEvent, context: AlertContext | None = None) -> None:
        self._put(Alert.from_event(event, context))

    def submit_many(self, events: list[tuple[LevelEvent, AlertContext | None]]) -> None:
        """What one tick produced: decided together and handed to the channels together."""
        if events:
            self._put(_Burst(tuple(Alert.from_event(e, c) for e, c in events)))

    def notice(self, key: str, text: str, exclude: str | None = None) -> None:
        """A daemon-level notice to every channel (but `exclude`): a channel failing, the store down."""
        now = self.now_ms()
        self._put(_NoticeRequest(Notice(f"notice\x1f{key}\x1f{now}", text, now), exclude))

    def reconcile(self, now: Callable[[str], tuple[frozenset[str], Alert] | None]) -> None:
        self._put(_Reconcile(now))

    def _put(self, item: Alert | _Burst | _NoticeRequest | _Reconcile) -> None:
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

    def notifying(self) -> bool:
        if self.leading is None:
            return True
        if not self.leading():
            self._caught_up = False
        return (self._caught_up and self.leading()) or self.store_away()

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
        """Loads active alerts, silences and undelivered notifications (delivered first). What the
        store cannot give now is read by `load_state()` once it answers; alerting starts anyway."""
        if self._loaded:
            return
        self._unread = {"alerts", "silences", *(f"outbox:{name}" for name in self.workers)}
        await self.load_state()
        self._loaded = True
        self.ready.set()

    async def load_state(self) -> bool:
        """Reads what was not read yet; True once everything was."""
        for what in sorted(self._unread):
            try:
                if what == "alerts":
                    self.policy.load(await self.store.alerts())  # the stored history wins over this run's
                elif what == "silences":
                    self.policy.silences = await self.store.silences(self.now_ms())
                elif (worker := self.workers.get(what.removeprefix("outbox:"))) is not None:
                    pending = await self.store.outbox_pending(worker.name, PENDING_LOAD_MAX)
                    worker.put_many(pending)
                    if pending:
                        log.info("undelivered alerts from before the restart", channel=worker.name, items=len(pending))
            except Exception as err:  # an unreadable store must not silence alerting
                log.error("alert state not loaded", what=what, error=type(err).__name__)
                continue
            self._unread.discard(what)
        return not self._unread

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

    async def handle(self, batch: list[Alert | _Burst | _NoticeRequest | _Reconcile]) -> None:
        alerts: list[Alert] = []
        for x in batch:
            if isinstance(x, Alert):
                alerts.append(x)
            elif isinstance(x, _Burst):
                alerts += x.alerts
            elif isinstance(x, _Reconcile):
                alerts += self._gone(x)
        held: dict[str, list[OutboxItem]] = {}
        notices = [OutboxItem(name, x.notice.key, x.notice.ts_ms, item_payload(x.notice))
                   for x in batch if isinstance(x, _NoticeRequest) for name in self.workers if name != x.exclude]
        if notices:
            await self._commit(Commit(outbox=tuple(notices)), held)
        for part in _by_account_slices(alerts, SLICE):
            self._latest_ms = max(self._latest_ms, *(a.ts_ms for a in part))
            async with self._apply_lock:
                await self._apply(self.policy.step(part, self.now_ms()), held)
            await asyncio.sleep(0)  # a burst of thousands leaves the engine its turns
        self._hand_over(held)

    def _gone(self, r: _Reconcile) -> list[Alert]:
        """Alerts restored from the store that no longer hold: they cleared while the daemon was
        stopped, or their account left the config. Each gets its resolved (or fresh) notice."""
        out = []
        for a in self.policy.firing():
            acc, level = a.alert.account, a.alert.level
            state = r.now(acc)
            if state is not None and level in state[0]:
                continue
            if state is None:
                template = replace(a.alert, kind=EventKind.RESOLVED, ts_ms=self.now_ms(), repeat=0,
                                   detail="account removed from the config")
            else:
                template = state[1]
            kind = EventKind.FRESH if level == STALE else EventKind.RESOLVED
            out.append(replace(template, level=level, kind=kind, since_ms=a.alert.ts_ms, min_health=a.worst_health))
        return out

    async def apply(self, changes: Changes) -> None:
        held: dict[str, list[OutboxItem]] = {}
        async with self._apply_lock:  # a transition waiting on the store must not land after a later one
            await self._apply(changes, held)
        self._hand_over(held)

    async def _apply(self, changes: Changes, held: dict[str, list[OutboxItem]]) -> None:
        """One commit: the alerts' new states and their notifications land together or not at all,
        so a kill -9 can neither lose a notification whose alert is saved as sent nor send one twice."""
        items = []
        for alert in changes.notify:
            if alert.repeat and self._refresh is not None:
                alert = self._refresh(alert)
            payload = item_payload(alert)
            items += [OutboxItem(name, alert.key, alert.ts_ms, payload) for name in channels_for(self.routes, alert)]
        await self._commit(Commit(tuple(a.record() for a in changes.put), changes.delete, tuple(items)), held)

    async def _commit(self, c: Commit, held: dict[str, list[OutboxItem]]) -> None:
        if not c or not self.notifying():  # a standby decides as the leader does, and keeps it to itself
            return
        try:
            added = await self.store.commit(c)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # memory is authoritative while running: deliver anyway
            log.warning("alert state not saved", error=type(err).__name__)
            added = [True] * len(c.outbox)
        for item, new in zip(c.outbox, added):
            if new:  # else in the outbox already, or delivered: exactly once
                held.setdefault(item.channel, []).append(item)

    async def take_over(self) -> None:
        """This instance now notifies for the state (it won the lease). The alerts the last one
        stored are the truth: their ids go on (a RESOLVED names the same firing). What fires here
        but was never stored is news, notified now; what the last one left undelivered is sent."""
        try:
            records = await self.store.alerts()
        except Exception as err:  # the store is away: go on from this instance's view
            log.error("alert state not loaded at take-over", error=type(err).__name__)
            self._caught_up = True
            return
        async with self._apply_lock:
            self.policy.adopt(records)
        self._unread |= {f"outbox:{name}" for name in self.workers}
        await self.load_state()
        self._caught_up = True
        await self.apply(self.policy.due(self.now_ms()))

    def _hand_over(self, held: dict[str, list[OutboxItem]]) -> None:
        """What one step decided reaches each channel at once: a burst is one digest, however long
        the store took to commit it."""
        for name, items in held.items():
            worker = self.workers.get(name)
            if worker is not None:  # else removed by a reload meanwhile: the outbox keeps its items
                worker.put_many(items)

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
            self._close_later(old)
            if replacement is not None:
                for item in old.held():
                    replacement.put(item)
        for name, w in new.workers.items():
            if name not in self.workers:
                w.report_to(self.channel_report)
                self.workers[name] = w
                self._start_worker(w)

    def _close_later(self, worker: ChannelWorker) -> None:
        close = getattr(worker.notifier, "close", None)
        if close is not None:
            task = asyncio.get_running_loop().create_task(close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

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



def _by_account_slices(alerts: list[Alert], size: int) -> list[list[Alert]]:
    """Slices of about `size`, never splitting one account's alerts (a warn and a critical of one
    tick must be decided together: the critical inhibits the warn)."""
    out: list[list[Alert]] = []
    part: list[Alert] = []
    for a in alerts:
        if len(part) >= size and a.account != part[-1].account:
            out.append(part)
            part = []
        part.append(a)
    if part:
        out.append(part)
    return out
