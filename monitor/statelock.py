"""One daemon per state: an exclusive lock on the state, and a record of whose state it is.

SQLite: `daemon.lock` in the state directory is flock'ed for the daemon's life and names
its holder (PID, host, since). The kernel drops the lock when the process dies, kill -9
included, so a stale lock never needs cleaning up. Redis: the state is the key prefix;
`<prefix>:daemon` names the holder, taken with SET NX PX and renewed at a third of
`ha.lease_ttl_s`, so a daemon killed elsewhere frees it within that TTL. With `[ha]`
enabled several instances share the state by design: no lock, the trading lease decides.

Whose state: `state_id` in the state directory (`<prefix>:state_id` in Redis) records
`daemon.state_id`, or else the config file's absolute path. Not the account list: adding
or removing an account is an edit of the same deployment. Another config pointed at the
state is refused unless run with --adopt-state.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError

from monitor.config import Settings
from monitor.errors import ConfigError, UserError
from monitor.model import iso_ms, wall_clock_ms
from monitor.store import redis_url, state_dir
from monitor.store.base import StoreUnavailable

log = structlog.get_logger("statelock")
LOCK_FILE = "daemon.lock"
ID_FILE = "state_id"
ADOPT_FLAG = "--adopt-state"


class StateInUse(UserError):
    """Another daemon holds the state, or it is another config's."""


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    host: str
    since: str

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), iso_ms(wall_clock_ms()) or "")

    def dump(self) -> bytes:
        return orjson.dumps({"pid": self.pid, "host": self.host, "since": self.since})

    @classmethod
    def parse(cls, raw: bytes | None) -> Holder | None:
        try:
            d = orjson.loads(raw or b"")
            return cls(int(d["pid"]), str(d["host"]), str(d["since"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def __str__(self) -> str:
        return f"PID {self.pid} on {self.host} since {self.since}"

    def gone(self) -> bool:
        """Certainly dead: a process of this host that no longer exists (one elsewhere cannot be told)."""
        if self.host != socket.gethostname() or self.pid == os.getpid():  # our PID: maybe a twin container
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


def state_identity(settings: Settings, config_path: str | Path) -> str:
    return settings.daemon.state_id or str(Path(config_path).resolve())


def must_record(recorded: str | None, ours: str, adopt: bool, where: str, fix: str) -> bool:
    """Whether to record `ours`: a new state (or one from before identities) or an adopted one."""
    if recorded is None or recorded == ours:
        return recorded is None
    if adopt:
        log.warning("state adopted from another config", state=where, was=recorded, now=ours)
        return True
    raise StateInUse(f"{where} belongs to another config ({recorded}), not to this one ({ours}): give this "
                     f"config its own {fix}, or run with {ADOPT_FLAG} to take that state over")


class FileStateLock:
    """The SQLite state's lock and identity, in its directory."""

    def __init__(self, directory: Path, exclusive: bool):
        self.dir = directory
        self.exclusive = exclusive
        self.lost: str | None = None  # a file lock is never lost
        self._fd: int | None = None

    def acquire(self, identity: str, adopt: bool) -> None:
        where = f"state {self.dir.absolute()} (daemon.state_dir)"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.exclusive:
                self._lock(where)
            path = self.dir / ID_FILE
            recorded = path.read_text().strip() if path.exists() else None
            if must_record(recorded or None, identity, adopt, where, "daemon.state_dir"):
                tmp = path.with_name(ID_FILE + ".tmp")
                tmp.write_text(identity + "\n")
                os.replace(tmp, path)  # whole or not at all
        except OSError as err:
            self.release()
            raise ConfigError(f"{where}: cannot use it ({err.strerror or err})") from None
        except UserError:
            self.release()
            raise

    def _lock(self, where: str) -> None:
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Holder.parse(os.pread(fd, 4096, 0))
            os.close(fd)
            raise StateInUse(f"{where} is in use by another daemon: {holder or 'holder unknown'} "
                             f"(lock file {self.dir.absolute() / LOCK_FILE})") from None
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, Holder.this_process().dump() + b"\n", 0)

    def release(self) -> None:
        # Closing drops the lock. The file stays: unlinking it would let two processes lock two files.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# Replaces the value only if it is still ARGV[1]: renewing our lock, or taking a dead holder's.
_SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def refused(err: Exception) -> str | None:
    """What a Redis error says is wrong in the configuration; never the URL's text (its password)."""
    if isinstance(err, AuthenticationError):  # NOAUTH, WRONGPASS, or a password Redis does not expect
        return "Redis refused to authenticate: the password in the URL is wrong or missing"
    if isinstance(err, NoPermissionError):
        return "the URL's Redis user lacks a permission the daemon needs (NOPERM)"
    if "Invalid Database" in str(err) or "DB index" in str(err):
        return "Redis refused the URL's database number (invalid DB index)"
    return None


class RedisStateLock:
    """The Redis state's lock and identity, under the store's prefix."""

    def __init__(self, settings: Settings, identity: str, adopt: bool, on_lost: Callable[[], None]):
        st = settings.store
        self._r = aioredis.from_url(redis_url(settings), socket_timeout=2.0, socket_connect_timeout=2.0)
        self._swap = self._r.register_script(_SWAP)
        self._drop = self._r.register_script(_RELEASE)
        self.key, self.id_key = f"{st.prefix}:daemon", f"{st.prefix}:{ID_FILE}"
        self.where = f"state under Redis prefix {st.prefix!r} (store.prefix)"
        self.source = f"store.url_env ({st.url_env})" if st.url_env else "store.url"
        self.exclusive = not settings.ha.enabled
        self.ttl_ms = int(settings.ha.lease_ttl_s * 1000)
        self.identity, self.adopt, self.on_lost = identity, adopt, on_lost
        self.holder = Holder.this_process().dump()
        self.held = self.claimed = False
        self.lost: str | None = None

    async def claim(self) -> None:
        """Takes the lock (unless HA) and checks whose state it is. StateInUse or ConfigError when
        refused; StoreUnavailable when Redis does not answer."""
        try:
            if self.exclusive and not self.held:
                await self._take()
            raw = await self._r.get(self.id_key)
            if must_record(raw.decode() if raw else None, self.identity, self.adopt, self.where, "store.prefix"):
                await self._r.set(self.id_key, self.identity)
        except (RedisError, OSError) as err:
            why = refused(err)
            if why is not None:
                raise ConfigError(f"{self.source}: {why}") from None
            raise StoreUnavailable(f"redis unavailable ({type(err).__name__})") from None
        self.claimed = True

    async def _take(self) -> None:
        for _ in range(2):  # the holder's key may expire between our SET and GET: then once more
            if await self._r.set(self.key, self.holder, nx=True, px=self.ttl_ms):
                break
            raw = await self._r.get(self.key)
            other = Holder.parse(raw)
            if other is not None and other.gone() and \
                    await self._swap(keys=[self.key], args=[raw, self.holder, self.ttl_ms]):
                log.warning("state lock taken over from a process that died", was=str(other))
                break
            if raw is not None:
                raise StateInUse(self._in_use(other))
        else:
            raise StateInUse(self._in_use(None))
        self.held = True

    def _in_use(self, other: Holder | None) -> str:
        return (f"{self.where} is in use by another daemon: {other or 'holder unknown'} (Redis key {self.key}; "
                "a killed daemon's lock expires within ha.lease_ttl_s)")

    async def run(self) -> None:
        """Renews the lock; claims the state late if Redis did not answer at start."""
        down = False
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                if not self.claimed:
                    await self.claim()
                    log.warning("state claimed now that Redis answers", state=self.where)
                elif self.exclusive and not await self._swap(keys=[self.key], args=[self.holder, self.holder,
                                                                                    self.ttl_ms]):
                    self.held = False  # it lapsed while Redis was away: ours again, unless another took it
                    await self._take()
                down = False
            except UserError as err:
                self.lost = str(err)
                log.error("stopping: the state cannot be held", reason=self.lost)
                self.on_lost()
                return
            except (StoreUnavailable, RedisError, OSError) as err:
                if not down:
                    log.warning("state lock not renewed: Redis unavailable", error=type(err).__name__)
                down = True

    async def release(self) -> None:
        try:
            if self.held:
                await self._drop(keys=[self.key], args=[self.holder])
        except Exception as err:  # it expires by itself
            log.warning("state lock not released", error=type(err).__name__)
        await self._r.aclose()


@contextlib.asynccontextmanager
async def hold_state(settings: Settings, config_path: str | Path, adopt: bool = False,
                     on_lost: Callable[[], None] = lambda: None) -> AsyncIterator[FileStateLock | RedisStateLock]:
    """Holds the state for the block; `on_lost` runs if another daemon takes it meanwhile (Redis)."""
    identity = state_identity(settings, config_path)
    if settings.store.backend == "sqlite":
        lock = FileStateLock(state_dir(settings), exclusive=not settings.ha.enabled)
        lock.acquire(identity, adopt)
        try:
            yield lock
        finally:
            lock.release()
        return
    rlock = RedisStateLock(settings, identity, adopt, on_lost)
    try:
        try:
            await rlock.claim()
        except StoreUnavailable as err:  # monitor and alert meanwhile; the store refuses orders
            log.error("state not claimed yet: Redis unavailable; claimed when it answers", error=str(err))
        renew = asyncio.create_task(rlock.run(), name="state-lock")
        try:
            yield rlock
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
    finally:
        await rlock.release()
