"""Leadership among instances sharing one store: only the lease holder trades.

The keeper renews the lease at a third of its TTL. The fencing token of the
tenure is checked against the store right before each order (TradingGate), so a
leader that paused past its lease (GC, a stopped VM) cannot place one: by then
another instance holds a newer token.
"""

from __future__ import annotations

import asyncio
import os
import socket

import structlog

from monitor.store.base import Lease, StateStore, StoreUnavailable

log = structlog.get_logger("lease")
LEASE_NAME = "trading"


def default_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper:
    def __init__(self, store: StateStore, instance_id: str, ttl_s: float):
        self.store = store
        self.instance_id = instance_id
        self.ttl_ms = int(ttl_s * 1000)
        self.lease: Lease | None = None
        self.changed = asyncio.Event()  # set whenever leadership is won or lost

    @property
    def leading(self) -> bool:
        return self.lease is not None

    async def renew(self) -> None:
        try:
            lease = await self.store.acquire_lease(LEASE_NAME, self.instance_id, self.ttl_ms)
        except StoreUnavailable:
            lease = None  # cannot prove leadership: stop trading until the store answers
        if (lease is None) != (self.lease is None) or (lease and self.lease and lease.token != self.lease.token):
            if lease is not None:
                log.warning("leading: this instance may trade", instance=self.instance_id, token=lease.token)
            else:
                log.warning("not leading: monitoring and alerting only", instance=self.instance_id)
            self.changed.set()
        self.lease = lease

    async def run(self) -> None:
        while True:
            await self.renew()
            await asyncio.sleep(self.ttl_ms / 3000)

    async def may_trade(self) -> bool:
        """Checked right before an order: the tenure's token must still be the one in force."""
        lease = self.lease
        if lease is None:
            return False
        try:
            return await self.store.check_fence(LEASE_NAME, lease.token)
        except StoreUnavailable:
            return False

    async def release(self) -> None:
        if self.lease is not None:
            try:
                await self.store.release_lease(LEASE_NAME, self.instance_id)
            except StoreUnavailable:
                pass  # it expires by itself
            self.lease = None
