"""The alerting commands: silence (set, list, expire), test-alert, and replay's --notify."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from itertools import groupby

from monitor.alerts.build import build_alert_manager, build_notifiers
from monitor.alerts.content import Alert
from monitor.alerts.message import Message, Notice
from monitor.alerts.notifiers import DeliveryError
from monitor.alerts.silences import check_target, new_silence
from monitor.config import Settings
from monitor.durations import parse_duration_ms
from monitor.errors import UserError
from monitor.model import iso_ms, wall_clock_ms
from monitor.store import open_store
from monitor.store.base import StoreUnavailable
from monitor.store.sqlite import MemoryStore

TEST_TIMEOUT_S = 30.0
REPLAY_DELIVERY_TIMEOUT_S = 120.0


def levels_of(settings: Settings) -> dict[str, list[str]]:
    return {a.name: [lv.name for lv in a.levels] for a in settings.accounts}


# -- silence --------------------------------------------------------------------------------
async def silence(settings: Settings, account: str | None, level: str | None, duration: str | None,
                  comment: str, list_them: bool, expire: str | None, out: Callable[[str], None] = print) -> int:
    store = open_store(settings, daemon=False)
    try:
        now = wall_clock_ms()
        if list_them:
            found = await store.silences(now)
            for s in sorted(found, key=lambda s: s.until_ms):
                note = f"  # {s.comment}" if s.comment else ""
                out(f"{s.id}  {s.account}/{s.level or '*'}  until {iso_ms(s.until_ms)}{note}")
            if not found:
                out("no silences in force")
            return 0
        if expire is not None:
            if not await store.delete_silence(expire):
                raise UserError(f"silence --expire: no silence with id {expire!r} (see silence --list)")
            out(f"silence {expire} expired")
            return 0
        if account is None or duration is None:
            raise UserError("silence: give ACCOUNT [LEVEL] --for DURATION, or --list, or --expire ID")
        check_target(account, level, levels_of(settings))
        s = new_silence(account, level, parse_duration_ms(duration, "--for"), now, comment)
        await store.put_silence(s)
        out(f"silence {s.id}: {account}/{level or '*'} muted until {iso_ms(s.until_ms)} (actions are not affected)")
        return 0
    except StoreUnavailable as err:
        raise UserError(f"store: {err}") from None
    finally:
        await store.close()


# -- test-alert -----------------------------------------------------------------------------
async def test_alert(settings: Settings, out: Callable[[str], None] = print) -> int:
    """One tagged message per configured channel, sent directly (not through the outbox)."""
    now = wall_clock_ms()
    host = socket.gethostname()
    failed = 0
    for notifier, _ in build_notifiers(settings):
        text = f"collateral-monitor test alert from {host}: channel {notifier.name} works ({iso_ms(now)})"
        message = Message(notices=(Notice(f"test\x1f{notifier.name}\x1f{now}", text, now),), test=True)
        try:
            await asyncio.wait_for(notifier.send(message), TEST_TIMEOUT_S)
            out(f"{notifier.name}: ok")
        except DeliveryError as err:
            failed += 1
            out(f"{notifier.name}: FAILED ({err.reason})")
        except TimeoutError:
            failed += 1
            out(f"{notifier.name}: FAILED (no answer within {TEST_TIMEOUT_S:.0f}s)")
        finally:
            await notifier.close()
    return 1 if failed else 0


# -- replay --notify ------------------------------------------------------------------------
async def notify_replay(settings: Settings, alerts: list[Alert], out: Callable[[str], None] = print,
                        timeout_s: float = REPLAY_DELIVERY_TIMEOUT_S) -> int:
    """Sends a replay's alerts through the configured notifiers with the daemon's policy, in the
    replay's event time (dedup, repeats, inhibition), then waits until the channels accepted them."""
    store = MemoryStore()
    clock = [0]
    manager = build_alert_manager(settings, store, levels_of(settings), clock_ms=lambda: clock[0])
    await manager.start()
    for ts_ms, same_time in groupby(alerts, key=lambda a: a.ts_ms):
        clock[0] = ts_ms
        await manager.apply(manager.policy.due(ts_ms))  # reminders due before this moment
        await manager.handle(list(same_time))
    workers = [asyncio.create_task(w.run()) for w in manager.workers.values()]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.idle() for w in manager.workers.values())), timeout_s)
        code = 0
    except TimeoutError:
        code = 1
    finally:
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await manager.close()
    for name, w in manager.workers.items():
        state = f"{len(w)} left undelivered" if len(w) else "all delivered"
        out(f"notify {name}: {w.items_sent} notification(s) in {w.messages_sent} message(s), {state}")
    return code
