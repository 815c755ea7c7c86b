"""Whether this instance may place an order now: the kill switch and leadership.

The kill switch has three handles, any of which stops trading while monitoring
and alerting go on: `execution.kill_switch = true` in the config, a file named
KILL in the state directory (`touch` it from a shell), and the store's switch
(`collateral-monitor kill-switch on`, or from a chat command), shared by every
instance on the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from monitor.lease import LeaseKeeper
from monitor.model import Plan
from monitor.store.base import StateStore, StoreUnavailable

KILL_FILE = "KILL"


class TradingGate:
    def __init__(self, store: StateStore, state_dir: Path, config_engaged: bool, lease: LeaseKeeper | None = None,
                 trade_without_store: bool = False, loaded: Callable[[], bool] = lambda: True):
        """`loaded()`: the state was read from the store. Until then the books are the config's,
        not the account's: no order."""
        self.store = store
        self.kill_file = state_dir / KILL_FILE
        self.config_engaged = config_engaged
        self.lease = lease
        self.trade_without_store = trade_without_store
        self.loaded = loaded

    async def __call__(self, plan: Plan) -> str | None:
        """The reason trading is refused, or None."""
        if not self.loaded():
            return "state not loaded from the store yet: no order until it is"
        if self.config_engaged:
            return "kill switch engaged in the config (execution.kill_switch)"
        if self.kill_file.exists():
            return f"kill switch engaged by the file {self.kill_file}"
        try:
            ks = await self.store.kill_switch()
        except StoreUnavailable:
            if not self.trade_without_store:
                return "state store unavailable: the kill switch cannot be read"
            ks = None
        if ks is not None and ks.engaged:
            return f"kill switch engaged ({ks.reason or 'no reason given'}{', by ' + ks.by if ks.by else ''})"
        if self.lease is not None and not await self.lease.may_trade():
            return "not the leader: another instance trades"
        return None
