"""The production store: Redis, shared by every instance of one deployment.

Keys live under a per-deployment prefix, so several deployments share one Redis.
The journal is a Redis Stream; the lease is a hash with a PX expiry beside a
counter that never expires, so fencing tokens rise across tenures.

Redis outages: writes never fail. Each write is an operation (plain data) sent at
once when Redis answers, otherwise queued in order (monitor/store/writebuffer.py)
and flushed when it returns; reads raise StoreUnavailable meanwhile (the daemon
reads the store only at start and keeps its working state in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor.store.base import (
    AccountSnapshot,
    AlertRecord,
    Commit,
    KillSwitch,
    Lease,
    OutboxItem,
    PlanRecord,
    Silence,
    StoreUnavailable,
    dump,
    load,
)
from monitor.store.writebuffer import Op, WriteBuffer

OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

# Adds an outbox item unless the channel holds or has delivered the key: exactly once.
_OUTBOX_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
redis.call('SADD', KEYS[5], ARGV[3])
return 1
"""
# Marks delivered, keeping the newest ARGV[2] delivered keys to refuse late duplicates.
_OUTBOX_DONE = """
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not seq then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[2]) - 1)
return 1
"""
_OUTBOX_RETRY = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local item = cjson.decode(raw)
item['attempts'] = item['attempts'] + 1
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(item))
return 1
"""
# A Commit, atomically (a script runs alone on the server). KEYS[1] guards against applying it
# twice (a retry after a reply lost in an outage). ARGV[1]: the key prefix; ARGV[2]: the commit as
# JSON (monitor.store.redis.RedisStore._commit_doc); ARGV[3]: delivered keys kept per channel.
_COMMIT = """
local doc = cjson.decode(ARGV[2])
local p = ARGV[1]
local added = {}
if redis.call('SET', KEYS[1], 1, 'NX', 'PX', 604800000) == false then
  for i = 1, #doc.outbox do added[i] = 0 end
  return added
end
for _, a in ipairs(doc.alerts) do redis.call('HSET', p .. ':alerts', a[1], a[2]) end
for _, f in ipairs(doc.alerts_deleted) do redis.call('HDEL', p .. ':alerts', f) end
for _, s in ipairs(doc.snapshots) do redis.call('HSET', p .. ':snapshots', s[1], s[2]) end
for _, pl in ipairs(doc.plans) do redis.call('HSET', p .. ':plans:outcome', pl[1], pl[2]) end
for _, j in ipairs(doc.journal) do
  redis.call('XADD', p .. ':journal', '*', 'kind', j[1], 'account', j[2], 'ts_ms', j[3], 'record', j[4])
end
for i, o in ipairs(doc.outbox) do
  local items, queue, done = p .. ':outbox:' .. o[1] .. ':items', p .. ':outbox:' .. o[1] .. ':queue',
                             p .. ':outbox:' .. o[1] .. ':done'
  if redis.call('HEXISTS', items, o[2]) == 1 or redis.call('ZSCORE', done, o[2]) then
    added[i] = 0
  else
    redis.call('HSET', items, o[2], o[3])
    redis.call('ZADD', queue, redis.call('INCR', p .. ':outbox:seq'), o[2])
    redis.call('SADD', p .. ':outbox:channels', o[1])
    added[i] = 1
  end
end
return added
"""
# Takes or renews the lease. A new tenure (free, expired, or another holder's expired) gets a new token.
_LEASE_ACQUIRE = """
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder and holder ~= ARGV[1] then return nil end
local token
if holder then token = tonumber(redis.call('HGET', KEYS[1], 'token'))
else token = redis.call('INCR', KEYS[2]); redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {token, redis.call('PTTL', KEYS[1])}
"""
_LEASE_RELEASE = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_DELIVERED_KEEP = 10_000
JOURNAL_PAGE = 500


def _journal_entry(raw: tuple[bytes, dict[bytes, bytes]]) -> dict[str, Any]:
    f = raw[1]
    return {"kind": f[b"kind"].decode(), "account": f[b"account"].decode(), "ts_ms": int(f[b"ts_ms"]),
            **orjson.loads(f[b"record"])}


def _journal_match(entry: dict[str, Any], account: str | None, since_ms: int | None) -> bool:
    return (account is None or entry["account"] == account) and (since_ms is None or entry["ts_ms"] >= since_ms)


class RedisStore:
    name = "redis"

    def __init__(self, url: str, prefix: str = "cm", *, buffer_max: int = 100_000, spill_path: Path | None = None,
                 allow_trading_in_outage: bool = False, on_outage: Callable[[bool, str], None] | None = None,
                 timeout_s: float = 2.0, buffer_writes: bool = True):
        """`buffer_writes=False` (the commands): a write during an outage raises StoreUnavailable."""
        # One immediate retry on a broken connection: after Redis restarts, every pooled connection
        # is dead and the first command on each would fail though Redis is back. Not on a timeout:
        # a command that timed out may have been applied.
        self._r = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                    retry_on_timeout=False,
                                    retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
        self.prefix = prefix
        self.allow_trading_in_outage = allow_trading_in_outage
        self._claimed_in_outage: set[str] = set()
        self.buffer_writes = buffer_writes
        self._writes = WriteBuffer(self._apply, OUTAGE_ERRORS, buffer_max, spill_path, self._outage_changed,
                                   self._r.ping)
        self._on_outage = on_outage
        self._scripts = {name: self._r.register_script(src) for name, src in (
            ("outbox_add", _OUTBOX_ADD), ("outbox_done", _OUTBOX_DONE), ("outbox_retry", _OUTBOX_RETRY),
            ("lease_acquire", _LEASE_ACQUIRE), ("lease_release", _LEASE_RELEASE), ("commit", _COMMIT))}

    def _outage_changed(self, down: bool, detail: str) -> None:
        if not down:
            self._claimed_in_outage.clear()  # those keys reached Redis with the flush
        if self._on_outage is not None:
            self._on_outage(down, detail)

    def k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def _read(self, aw: Any) -> Any:
        try:
            return await aw
        except OUTAGE_ERRORS as err:
            if hasattr(aw, "close"):
                aw.close()
            if self.buffer_writes:  # a command just fails; the daemon rides the outage out
                self._writes.note_outage(err)
            raise StoreUnavailable(f"redis unavailable ({type(err).__name__})") from None

    @property
    def buffered_writes(self) -> int:
        """Writes waiting for Redis, in memory or spilled (read by the metrics endpoint)."""
        return len(self._writes)

    @property
    def in_outage(self) -> bool:
        return self._writes.outage

    # -- writes: each an Op applied now or after the outage, in order -----------------------
    async def _apply(self, op: Op) -> None:
        name, args = op.name, op.args
        r = self._r
        if name == "journal":
            kind, account, ts_ms, record = args
            await r.xadd(self.k("journal"), {"kind": kind, "account": account, "ts_ms": ts_ms,
                                             "record": orjson.dumps(record)})
        elif name == "hset":
            await r.hset(self.k(args[0]), args[1], args[2])
        elif name == "hset_many":
            await r.hset(self.k(args[0]), mapping=args[1])
        elif name == "hdel":
            await r.hdel(self.k(args[0]), args[1])
        elif name == "claim":
            await r.hsetnx(self.k("plans"), args[0], args[1])
        elif name == "set":
            await r.set(self.k(args[0]), args[1])
        elif name == "commit":
            await self._commit_script(*args)
        elif name in ("outbox_add", "outbox_done", "outbox_retry"):
            await self._outbox_script(name, *args)
        else:
            raise ValueError(f"unknown store operation {name!r}")

    async def _outbox_script(self, name: str, channel: str, key: str, raw: bytes | None = None) -> int:
        keys = [self.k("outbox", channel, "items"), self.k("outbox", channel, "queue"),
                self.k("outbox", channel, "done")]
        if name == "outbox_add":
            return await self._scripts[name](keys=[*keys, self.k("outbox", "seq"), self.k("outbox", "channels")],
                                             args=[key, raw, channel])
        if name == "outbox_done":
            return await self._scripts[name](keys=[keys[0], keys[1], keys[2]], args=[key, _DELIVERED_KEEP])
        return await self._scripts[name](keys=[keys[0]], args=[key])

    async def _write(self, name: str, *args: Any, coalesce: str | None = None) -> None:
        if not self.buffer_writes:
            await self._read(self._apply(Op(name, args)))
            return
        await self._writes.submit(Op(name, args, coalesce))

    # -- transitions ------------------------------------------------------------------------
    async def commit(self, c: Commit) -> list[bool]:
        doc = self._commit_doc(c)
        if not self._writes.outage and not len(self._writes):
            try:
                return [bool(x) for x in await self._commit_script(c.id, doc)]
            except OUTAGE_ERRORS as err:
                self._writes.note_outage(err)
        await self._write("commit", c.id, doc)  # in order, once, with the flush: outbox keys deduplicated then
        return [True] * len(c.outbox)

    @staticmethod
    def _commit_doc(c: Commit) -> bytes:
        """The commit as the script reads it: records are orjson text, so they nest as strings."""
        return orjson.dumps({
            "alerts": [[f"{a.account}\x1f{a.level}", dump(a).decode()] for a in c.alerts],
            "alerts_deleted": [f"{account}\x1f{level}" for account, level in c.alerts_deleted],
            "snapshots": [[s.account, dump(s).decode()] for s in c.snapshots],
            "plans": [[plan_id, orjson.dumps({"state": state, "detail": detail}).decode()]
                      for plan_id, state, detail in c.plans_finished],
            "journal": [[j.kind, j.account, str(j.ts_ms), orjson.dumps(j.record).decode()] for j in c.journal],
            "outbox": [[o.channel, o.key, dump(o).decode()] for o in c.outbox],
        })

    async def _commit_script(self, commit_id: str, doc: bytes) -> list[int]:
        return await self._scripts["commit"](keys=[self.k("commits", commit_id)], args=[self.prefix, doc])

    # -- order idempotency -----------------------------------------------------------------
    async def claim_plan(self, plan_id: str, account: str, ts_ms: int) -> bool:
        raw = dump(PlanRecord(plan_id, account, ts_ms))
        if not self._writes.outage:
            try:
                return bool(await self._r.hsetnx(self.k("plans"), plan_id, raw))
            except OUTAGE_ERRORS as err:
                self._writes.note_outage(err)
        if not self.allow_trading_in_outage:
            raise StoreUnavailable("redis unavailable: no order without its idempotency key")
        if plan_id in self._claimed_in_outage:
            return False
        self._claimed_in_outage.add(plan_id)
        await self._write("claim", plan_id, raw)
        return True

    async def finish_plan(self, plan_id: str, state: str, detail: dict[str, Any] | None = None) -> None:
        # A write only (no read first): it follows an order, and must not fail if Redis just went away.
        outcome = orjson.dumps({"state": state, "detail": detail or {}})
        await self._write("hset", "plans:outcome", plan_id, outcome, coalesce=f"plan:{plan_id}")

    async def open_plans(self) -> list[PlanRecord]:
        claims = await self._read(self._r.hgetall(self.k("plans")))
        closed = await self._read(self._r.hkeys(self.k("plans:outcome")))
        open_ = [load(PlanRecord, v) for k, v in claims.items() if k not in set(closed)]
        return sorted(open_, key=lambda p: p.ts_ms)

    # -- journal ---------------------------------------------------------------------------
    async def journal(self, kind: str, account: str, ts_ms: int, record: dict[str, Any]) -> None:
        await self._write("journal", kind, account, ts_ms, record)

    async def read_journal(self, account: str | None = None, since_ms: int | None = None,
                           limit: int | None = None) -> list[dict[str, Any]]:
        # Stream ids are insert times, never before the event's time: `since` on ids misses nothing.
        key, low = self.k("journal"), f"{since_ms}-0" if since_ms else "-"
        if limit is None:
            entries = await self._read(self._r.xrange(key, min=low))
            return [e for e in map(_journal_entry, entries) if _journal_match(e, account, since_ms)]
        out: list[dict[str, Any]] = []  # the newest `limit`: read backwards, a page at a time
        high = "+"
        while len(out) < limit:
            page = await self._read(self._r.xrevrange(key, max=high, min=low, count=JOURNAL_PAGE))
            out += [e for e in map(_journal_entry, page) if _journal_match(e, account, since_ms)]
            if len(page) < JOURNAL_PAGE:
                break
            high = "(" + page[-1][0].decode()
        out = out[:limit]
        out.reverse()
        return out

    async def trim_journal(self, before_ms: int) -> int:
        # Stream ids are insert times in ms: MINID drops exactly the entries recorded before.
        return int(await self._read(self._r.xtrim(self.k("journal"), minid=str(before_ms), approximate=False)))

    # -- snapshots, alerts, silences, kill switch (last write wins: coalesced in an outage) ---
    async def put_snapshot(self, snap: AccountSnapshot) -> None:
        await self._write("hset", "snapshots", snap.account, dump(snap), coalesce=f"snap:{snap.account}")

    async def put_snapshots(self, snaps: list[AccountSnapshot]) -> None:
        if snaps:
            await self._write("hset_many", "snapshots", {s.account: dump(s) for s in snaps})

    async def delete_snapshot(self, account: str) -> None:
        await self._write("hdel", "snapshots", account, coalesce=f"snap:{account}")

    async def snapshots(self) -> dict[str, AccountSnapshot]:
        raw = await self._read(self._r.hgetall(self.k("snapshots")))
        return {k.decode(): load(AccountSnapshot, v) for k, v in raw.items()}

    async def put_alert(self, alert: AlertRecord) -> None:
        key = f"{alert.account}\x1f{alert.level}"
        await self._write("hset", "alerts", key, dump(alert), coalesce=f"alert:{key}")

    async def delete_alert(self, account: str, level: str) -> None:
        key = f"{account}\x1f{level}"
        await self._write("hdel", "alerts", key, coalesce=f"alert:{key}")

    async def alerts(self) -> list[AlertRecord]:
        raw = await self._read(self._r.hgetall(self.k("alerts")))
        return [load(AlertRecord, raw[k]) for k in sorted(raw)]

    async def put_silence(self, silence: Silence) -> None:
        await self._write("hset", "silences", silence.id, dump(silence), coalesce=f"silence:{silence.id}")

    async def delete_silence(self, silence_id: str) -> bool:
        existed = await self._read(self._r.hexists(self.k("silences"), silence_id))
        await self._write("hdel", "silences", silence_id, coalesce=f"silence:{silence_id}")
        return bool(existed)

    async def silences(self, now_ms: int | None = None) -> list[Silence]:
        raw = await self._read(self._r.hgetall(self.k("silences")))
        found = [load(Silence, raw[k]) for k in sorted(raw)]
        return [s for s in found if now_ms is None or s.until_ms > now_ms]

    async def set_kill_switch(self, ks: KillSwitch) -> None:
        await self._write("set", "kill_switch", dump(ks), coalesce="kill_switch")

    async def kill_switch(self) -> KillSwitch | None:
        raw = await self._read(self._r.get(self.k("kill_switch")))
        return load(KillSwitch, raw) if raw else None

    # -- outbox ----------------------------------------------------------------------------
    async def outbox_add(self, item: OutboxItem) -> bool:
        if not self._writes.outage and not len(self._writes):
            try:
                return bool(await self._outbox_script("outbox_add", item.channel, item.key, dump(item)))
            except OUTAGE_ERRORS as err:
                self._writes.note_outage(err)
        await self._write("outbox_add", item.channel, item.key, dump(item))  # deduplicated on flush
        return True

    async def outbox_pending(self, channel: str, limit: int = 100) -> list[OutboxItem]:
        keys = await self._read(self._r.zrange(self.k("outbox", channel, "queue"), 0, limit - 1))
        if not keys:
            return []
        raws = await self._read(self._r.hmget(self.k("outbox", channel, "items"), keys))
        return [load(OutboxItem, raw) for raw in raws if raw]

    async def outbox_done(self, channel: str, key: str) -> None:
        await self._write("outbox_done", channel, key)

    async def outbox_retry(self, channel: str, key: str) -> None:
        await self._write("outbox_retry", channel, key)

    async def outbox_depth(self) -> dict[str, int]:
        channels = sorted(c.decode() for c in await self._read(self._r.smembers(self.k("outbox", "channels"))))
        depths = {c: await self._read(self._r.zcard(self.k("outbox", c, "queue"))) for c in channels}
        return {c: n for c, n in depths.items() if n}

    # -- lease -----------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl_ms: int) -> Lease | None:
        got = await self._read(self._scripts["lease_acquire"](keys=[self.k("lease", name), self.k("lease", name, "token")],
                                                              args=[holder, ttl_ms]))
        if got is None:
            return None
        token, pttl = int(got[0]), int(got[1])
        return Lease(name, holder, token, await self._server_ms() + pttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._read(self._scripts["lease_release"](keys=[self.k("lease", name)], args=[holder]))

    async def check_fence(self, name: str, token: int) -> bool:
        current = await self._read(self._r.hget(self.k("lease", name), "token"))
        return current is not None and int(current) == token

    async def lease(self, name: str) -> Lease | None:
        key = self.k("lease", name)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.pttl(key)
            fields, pttl = await self._read(pipe.execute())
        if not fields or pttl < 0:
            return None
        return Lease(name, fields[b"holder"].decode(), int(fields[b"token"]), await self._server_ms() + pttl)

    async def _server_ms(self) -> int:
        sec, usec = await self._read(self._r.time())
        return sec * 1000 + usec // 1000

    async def close(self) -> None:
        await self._writes.close()
        await self._r.aclose()

