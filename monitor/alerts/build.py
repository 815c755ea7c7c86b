"""Builds the alerting components from settings: notifiers (with their secrets), rate
limits, routes, the policy and the manager. No I/O here: sessions open on first use."""

from __future__ import annotations

from collections.abc import Callable

from monitor.alerts.content import Alert
from monitor.alerts.delivery import ChannelWorker, DeliveryPolicy
from monitor.alerts.manager import AlertManager
from monitor.alerts.notifiers import ConsoleNotifier, Notifier
from monitor.alerts.policy import AlertPolicy
from monitor.alerts.ratelimit import RateLimiter, windows_for
from monitor.alerts.routing import Route
from monitor.alerts.slack import SlackNotifier
from monitor.alerts.telegram import TelegramNotifier
from monitor.alerts.webhook import WebhookNotifier
from monitor.config import NotifierSettings, Settings
from monitor.model import wall_clock_ms
from monitor.secrets import Secrets
from monitor.store.base import StateStore

Routed = tuple[Notifier, frozenset[str] | None]  # a notifier and the levels routed to it (None: all)


def build_notifier(ns: NotifierSettings, secrets: Secrets, index: int = 0) -> Notifier:
    where = f"notifiers[{index}] ({ns.name})"
    if ns.kind == "telegram":
        return TelegramNotifier(ns.name, secrets.get(ns.token_env, f"{where}.token_env"), ns.chat_id, ns.api_base,
                                ns.timeout_s)
    if ns.kind == "slack":
        return SlackNotifier(ns.name, secrets.get(ns.webhook_url_env, f"{where}.webhook_url_env"), ns.timeout_s)
    if ns.kind == "webhook":
        secret = secrets.get(ns.secret_env, f"{where}.secret_env") if ns.secret_env else None
        return WebhookNotifier(ns.name, secrets.get(ns.url_env, f"{where}.url_env"), secret, ns.timeout_s)
    return ConsoleNotifier(ns.name)


def build_notifiers(settings: Settings, secrets: Secrets | None = None) -> list[Routed]:
    secrets = secrets or Secrets(settings.alerts.secrets_file)
    return [(build_notifier(n, secrets, i), frozenset(n.levels) if n.levels is not None else None)
            for i, n in enumerate(settings.notifiers)]


def level_ranks(level_order: dict[str, list[str]]) -> Callable[[str, str], int]:
    """`level_order`: per account, its levels mildest first. Unknown levels rank lowest."""
    ranks = {acc: {lv: j for j, lv in enumerate(levels)} for acc, levels in level_order.items()}
    return lambda account, level: ranks.get(account, {}).get(level, -1)


def repeat_intervals(settings: Settings) -> Callable[[str], int]:
    repeat = {lv: int(s * 1000) for lv, s in settings.alerts.repeat_s.items()}
    default = int(settings.alerts.default_repeat_s * 1000)
    return lambda level: repeat.get(level, default)


def build_alert_manager(settings: Settings, store: StateStore, level_order: dict[str, list[str]],
                        notifiers: list[Routed] | None = None, *, clock_ms: Callable[[], int] = wall_clock_ms,
                        refresh: Callable[[Alert], Alert] | None = None) -> AlertManager:
    notifiers = notifiers if notifiers is not None else build_notifiers(settings)
    a = settings.alerts
    delivery = DeliveryPolicy(a.group_wait_s, a.retry_base_s, a.retry_max_s, a.channel_failing_after_s,
                              a.retry_after_max_s)
    by_name = {n.name: n for n in settings.notifiers}
    manager: AlertManager | None = None

    def report(channel: str, failing: bool | None, reason: str) -> None:
        if manager is not None:
            manager.channel_report(channel, failing, reason)

    workers = []
    for notifier, _ in notifiers:
        ns = by_name.get(notifier.name)
        windows = windows_for(ns.kind, ns.chat_id, ns.min_interval_s, ns.max_per_minute) if ns else []
        workers.append(ChannelWorker(notifier, store, RateLimiter(windows), delivery, report))
    routes = [Route(n.name, levels) for n, levels in notifiers]
    policy = AlertPolicy(repeat_intervals(settings), level_ranks(level_order))
    manager = AlertManager(workers, routes, policy, store, queue_size=settings.daemon.queue_size, clock_ms=clock_ms,
                           refresh=refresh, silence_poll_s=a.silence_poll_s)
    return manager


def channel_lines(settings: Settings, secrets: Secrets | None = None) -> list[str]:
    """check-config's view of the channels: routing, and whether each secret is found (never its value)."""
    secrets = secrets or Secrets(settings.alerts.secrets_file)
    out = []
    for n in settings.notifiers:
        names = [getattr(n, k) for k in ("token_env", "webhook_url_env", "url_env", "secret_env") if getattr(n, k)]
        found = [f"{name} {'set' if secrets.has(name) else 'NOT SET'}" for name in names]
        levels = ", ".join(n.levels) if n.levels is not None else "all levels"
        out.append(f"  notifier {n.name}: {n.kind}, {levels}" + (f"; {', '.join(found)}" if found else ""))
    return out
