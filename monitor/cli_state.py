"""Commands that read or change the state store: status, journal, kill-switch.

They open the configured store (either backend) directly, so they work whether
or not the daemon runs, and on any host that reaches the store.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from monitor.config import load_settings
from monitor.durations import parse_duration_ms
from monitor.errors import UserError
from monitor.execution.journaled import legs_text
from monitor.lease import LEASE_NAME, default_instance_id
from monitor.model import iso_ms, wall_clock_ms
from monitor.store import open_store
from monitor.store.base import KillSwitch, StateStore, StoreUnavailable

T = TypeVar("T")


def with_store(config: str, use: Callable[[StateStore], Awaitable[T]]) -> T:
    """Runs `use` on the config's store; an unreachable store is one line, not a traceback."""
    settings = load_settings(config)

    async def go() -> T:
        store = open_store(settings, daemon=False)
        try:
            return await use(store)
        except StoreUnavailable as err:
            raise UserError(f"store ({settings.store.backend}): {err}") from None
        finally:
            await store.close()
    return asyncio.run(go())


# -- status ------------------------------------------------------------------------------
async def gather_status(store: StateStore, now_ms: int) -> dict[str, Any]:
    snaps = await store.snapshots()
    lease = await store.lease(LEASE_NAME)
    ks = await store.kill_switch()
    return {
        "store": store.name,
        "accounts": [{"account": s.account, "health": s.health, "native": s.native, "level": s.level,
                      "residual": s.residual or None, "as_of": iso_ms(s.ts_ms)}
                     for s in sorted(snaps.values(), key=lambda s: (s.health is None, s.health or 0))],
        "alerts": [{"account": a.account, "level": a.level, "since": iso_ms(a.since_ms),
                    "last_sent": iso_ms(a.last_sent_ms), "worst_health": a.worst_health} for a in await store.alerts()],
        "silences": [{"id": s.id, "account": s.account, "level": s.level, "until": iso_ms(s.until_ms),
                      "comment": s.comment} for s in await store.silences(now_ms)],
        "last_actions": await store.read_journal(limit=10),
        "outbox": await store.outbox_depth(),
        "leader": None if lease is None else {"instance": lease.holder, "token": lease.token,
                                              "expires": iso_ms(lease.expires_ms)},
        "kill_switch": None if ks is None else {"engaged": ks.engaged, "reason": ks.reason, "by": ks.by,
                                                "at": iso_ms(ks.ts_ms)},
    }


def _fmt_health(h: float | None) -> str:
    return "unknown" if h is None else f"{h:.4f}"


def print_status(st: dict[str, Any]) -> None:
    ks = st["kill_switch"]
    trading = "STOPPED by the kill switch" + (f" ({ks['reason']})" if ks["reason"] else "") \
        if ks and ks["engaged"] else "allowed"
    leader = st["leader"]
    print(f"store: {st['store']}; trading: {trading}; leader: "
          + (f"{leader['instance']} (token {leader['token']}, lease until {leader['expires']})" if leader else "none"))
    print(f"accounts ({len(st['accounts'])}), worst first:")
    for a in st["accounts"]:
        native = "" if a.get("native") is None else f" ({a['native']:.6g} in the venue's figure)"
        residual = a.get("residual")
        calibrated = "" if not residual else \
            f", residual from the venue {residual['num']:+.6g} / {residual['den']:+.6g} USD"
        print(f"  {a['account']}: health {_fmt_health(a['health'])}{native}{calibrated}, level {a['level'] or '-'} "
              f"(as of {a['as_of']})")
    print(f"active alerts ({len(st['alerts'])}):")
    for a in st["alerts"]:
        print(f"  {a['account']} {a['level']} since {a['since']}, last sent {a['last_sent'] or 'never'}")
    print(f"silences ({len(st['silences'])}):")
    for s in st["silences"]:
        print(f"  {s['id']}: {s['account']} {s['level'] or 'all levels'} until {s['until']} {s['comment']}".rstrip())
    print(f"last actions ({len(st['last_actions'])}):")
    for e in st["last_actions"]:
        print("  " + journal_line(e))
    depth = st["outbox"]
    print("outbox: " + (", ".join(f"{c} {n}" for c, n in depth.items()) if depth else "empty"))


def cmd_status(args: argparse.Namespace) -> int:
    st = with_store(args.config, lambda store: gather_status(store, wall_clock_ms()))
    if args.json:
        print(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode())
    else:
        print_status(st)
    return 0


# -- journal ----------------------------------------------------------------------------
def journal_line(e: dict[str, Any]) -> str:
    what = "; ".join(legs_text(e.get("fills", []), e.get("repays", []), e.get("transfers", []))) or "nothing filled"
    errors = f" errors: {', '.join(e['errors'])}" if e.get("errors") else ""
    level = f" {e['level']}" if e.get("level") else ""
    return f"{iso_ms(e['ts_ms'])} {e['account']}{level} {e['kind']} {e.get('plan_id', '')}: {what}{errors}"


def cmd_journal(args: argparse.Namespace) -> int:
    since = wall_clock_ms() - parse_duration_ms(args.since, "--since") if args.since else None
    entries = with_store(args.config, lambda store: store.read_journal(args.account, since, args.limit))
    for e in entries:
        print(orjson.dumps(e).decode() if args.json else journal_line(e))
    return 0


# -- kill switch ------------------------------------------------------------------------
def cmd_kill_switch(args: argparse.Namespace) -> int:
    async def use(store: StateStore) -> KillSwitch | None:
        if args.action != "status":
            await store.set_kill_switch(KillSwitch(args.action == "on", wall_clock_ms(), args.reason or "",
                                                   f"cli@{default_instance_id()}"))
        return await store.kill_switch()

    ks = with_store(args.config, use)
    if ks is not None and ks.engaged:
        print(f"kill switch ON since {iso_ms(ks.ts_ms)}: no order will be placed"
              + (f" ({ks.reason})" if ks.reason else ""))
    else:
        print("kill switch off: trading allowed (the config flag and the KILL file in the state directory "
              "are separate handles)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("status", help="accounts, alerts, silences, last actions, outbox and leader, from the store")
    st.add_argument("--config", required=True)
    st.add_argument("--json", action="store_true", help="one JSON document")
    st.set_defaults(func=cmd_status)

    jr = sub.add_parser("journal", help="the action and fill journal")
    jr.add_argument("--config", required=True)
    jr.add_argument("--since", metavar="DURATION", help="e.g. 1h, 30m, 2d")
    jr.add_argument("--account")
    jr.add_argument("--limit", type=int, help="only the newest N entries")
    jr.add_argument("--json", action="store_true", help="JSON lines")
    jr.set_defaults(func=cmd_journal)

    ks = sub.add_parser("kill-switch", help="stop (on) or allow (off) all trading; monitoring and alerts go on")
    ks.add_argument("action", choices=["on", "off", "status"])
    ks.add_argument("--config", required=True)
    ks.add_argument("--reason", help="recorded with the switch")
    ks.set_defaults(func=cmd_kill_switch)
