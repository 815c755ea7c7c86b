"""Persistent state: the StateStore interface and its backends (SQLite embedded, Redis)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from monitor.config import Settings
from monitor.errors import ConfigError
from monitor.store.base import StateStore
from monitor.store.sqlite import SqliteStore


def state_dir(settings: Settings) -> Path:
    return Path(settings.daemon.state_dir)


def redis_url(settings: Settings) -> str:
    """The Redis URL from the config or its environment variable (it may hold a password: never log it)."""
    st = settings.store
    url = os.environ.get(st.url_env, "") if st.url_env else st.url
    if not url:
        raise ConfigError(f"store.url_env: the environment variable {st.url_env} is not set")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("store.url: a Redis URL starts with redis://, rediss:// or unix://")
    return url


def open_store(settings: Settings, on_outage: Callable[[bool, str], None] | None = None, *,
               daemon: bool = True) -> StateStore:
    """The configured backend. Problems a user can fix end in a ConfigError naming the key.
    Only the daemon buffers Redis writes through an outage (and owns the spill file); a
    command's write fails at once, so the user knows it did not happen."""
    st = settings.store
    if st.backend == "sqlite":
        path = state_dir(settings) / "state.sqlite"
        try:
            return SqliteStore(path)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"daemon.state_dir: cannot open {path} ({err})") from None
    from monitor.store.redis import RedisStore  # only a Redis deployment needs the client

    url = redis_url(settings)
    if not daemon:
        return RedisStore(url, st.prefix, buffer_writes=False)
    try:
        state_dir(settings).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"daemon.state_dir: cannot create {state_dir(settings)} ({err})") from None
    return RedisStore(url, st.prefix, buffer_max=st.buffer_max,
                      spill_path=state_dir(settings) / f"redis-spill-{st.prefix}.jsonl",
                      allow_trading_in_outage=st.trade_during_outage, on_outage=on_outage)
