"""The alert policy: dedup, repeats, resolution, inhibition and silences, in event time."""

from __future__ import annotations

from monitor.alerts.build import level_ranks
from monitor.alerts.content import Alert
from monitor.alerts.policy import AlertPolicy
from monitor.model import EventKind, LevelEvent
from monitor.store.base import Silence

MIN = 60_000
T0 = 1_700_000_000_000


def policy(repeat: dict[str, int] | None = None) -> AlertPolicy:
    rep = {"warn": 240 * MIN, "critical": 10 * MIN, "stale": 30 * MIN} | (repeat or {})
    return AlertPolicy(lambda lv: rep.get(lv, 240 * MIN), level_ranks({"a": ["warn", "act", "critical"],
                                                                     "b": ["warn", "act", "critical"]}))


def ev(kind: EventKind, level: str, t: int, account: str = "a", health: float = 1.1, **kw) -> Alert:
    return Alert.from_event(LevelEvent(account, level, kind, health, health, t, **kw))


def sent(changes) -> list[tuple[str, str, str, int]]:
    return [(a.account, a.level, a.state, a.repeat) for a in changes.notify]


def test_one_notification_per_firing_then_repeats_at_the_level_interval() -> None:
    p = policy()
    assert sent(p.step([ev(EventKind.FIRING, "critical", T0)], T0)) == [("a", "critical", "firing", 0)]
    assert sent(p.step([ev(EventKind.FIRING, "critical", T0 + 1000)], T0 + 1000)) == []  # dedup
    assert sent(p.due(T0 + 10 * MIN - 1)) == []
    assert sent(p.due(T0 + 10 * MIN)) == [("a", "critical", "firing", 1)]
    assert sent(p.due(T0 + 15 * MIN)) == []
    assert sent(p.due(T0 + 20 * MIN)) == [("a", "critical", "firing", 2)]


def test_resolved_notice_says_how_low_and_how_long_and_only_if_notified() -> None:
    p = policy()
    p.step([ev(EventKind.FIRING, "warn", T0)], T0)
    out = p.step([ev(EventKind.RESOLVED, "warn", T0 + 5 * MIN, min_health=1.02, since_ms=T0)], T0 + 5 * MIN)
    (r,) = out.notify
    assert (r.state, r.min_health, r.ts_ms - r.since_ms) == ("resolved", 1.02, 5 * MIN)
    assert out.delete == (("a", "warn"),)
    assert sent(p.step([ev(EventKind.RESOLVED, "warn", T0 + 6 * MIN)], T0 + 6 * MIN)) == []  # nothing firing


def test_deeper_level_inhibits_milder_until_it_resolves() -> None:
    p = policy()
    p.step([ev(EventKind.FIRING, "critical", T0)], T0)
    assert sent(p.step([ev(EventKind.FIRING, "warn", T0)], T0)) == []  # held back by critical
    assert sent(p.due(T0 + 500 * MIN)) == [("a", "critical", "firing", 1)]  # critical repeats, warn does not
    out = p.step([ev(EventKind.RESOLVED, "critical", T0 + 501 * MIN)], T0 + 501 * MIN)
    assert sent(out) == [("a", "critical", "resolved", 0), ("a", "warn", "firing", 0)]
    # Another account is not inhibited by a's critical.
    p.step([ev(EventKind.FIRING, "critical", T0)], T0)
    assert sent(p.step([ev(EventKind.FIRING, "warn", T0, account="b")], T0)) == [("b", "warn", "firing", 0)]


def test_stale_blind_alert_inhibits_ratio_alerts_of_that_account() -> None:
    p = policy()
    assert sent(p.step([ev(EventKind.STALE, "stale", T0)], T0)) == [("a", "stale", "stale", 0)]
    assert sent(p.step([ev(EventKind.FIRING, "critical", T0 + 1)], T0 + 1)) == []
    out = p.step([ev(EventKind.FRESH, "stale", T0 + 3 * MIN)], T0 + 3 * MIN)
    fresh, critical = out.notify
    assert (fresh.state, fresh.ts_ms - fresh.since_ms) == ("fresh", 3 * MIN)
    assert (critical.level, critical.state) == ("critical", "firing")


def test_silence_mutes_and_an_alert_still_firing_goes_out_when_it_expires() -> None:
    p = policy()
    p.silences = [Silence("s1", "a", "warn", T0 + 60 * MIN, T0)]
    assert sent(p.step([ev(EventKind.FIRING, "warn", T0)], T0)) == []
    assert sent(p.step([ev(EventKind.FIRING, "critical", T0)], T0)) == [("a", "critical", "firing", 0)]
    assert sent(p.step([ev(EventKind.INEFFECTIVE, "warn", T0)], T0)) == []  # one-off notices too
    p.step([ev(EventKind.RESOLVED, "critical", T0 + MIN)], T0 + MIN)
    assert sent(p.due(T0 + 59 * MIN)) == []
    assert sent(p.due(T0 + 60 * MIN)) == [("a", "warn", "firing", 0)]


def test_active_alerts_survive_a_restart_through_their_records() -> None:
    p = policy()
    changes = p.step([ev(EventKind.FIRING, "critical", T0)], T0)
    restarted = policy()
    restarted.load([a.record() for a in changes.put])
    assert sent(restarted.step([ev(EventKind.FIRING, "critical", T0 + 5000)], T0 + 5000)) == []  # still deduped
    assert sent(restarted.due(T0 + 10 * MIN)) == [("a", "critical", "firing", 1)]


def test_levels_firing_in_the_same_tick_notify_only_the_deepest() -> None:
    p = policy()
    out = p.step([ev(EventKind.FIRING, "warn", T0), ev(EventKind.FIRING, "critical", T0)], T0)
    assert sent(out) == [("a", "critical", "firing", 0)]
    assert {(a.alert.account, a.alert.level) for a in out.put} == {("a", "warn"), ("a", "critical")}  # both are active
