"""The HTTP endpoint over a real socket: /metrics parsed by prometheus-client, /healthz, the token, the websocket."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import load_settings, parse_settings
from monitor.errors import ConfigError
from monitor.feeds.stats import FeedStats
from monitor.http.metrics import daemon_registry, outbox_depth
from monitor.model import PriceTick, wall_clock_ms
from monitor.service import run_daemon
from monitor.store.sqlite import MemoryStore
from monitor.telemetry import LatencyHistogram, TickRate
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.test_daemon import ListNotifier, PushFeed, crash_ticks, until


async def push_each(d, feed: PushFeed, ticks: list[PriceTick]) -> None:
    """One tick at a time, each applied before the next (the inbox would coalesce a burst)."""
    for t in ticks:
        done = d.ticks_applied + 1
        feed.push(t)
        await until(lambda done=done: d.ticks_applied >= done, what=f"tick {t} applied")


def http_settings(config: Path, http: dict | None = None, **daemon):
    raw = load_settings(config).model_dump(exclude_none=True)
    raw["daemon"] = {**raw["daemon"], "restart_backoff_s": 0.01, **daemon}
    raw["http"] = {"listen": "127.0.0.1:0", "push_every_s": 0.05, **(http or {})}
    return parse_settings(raw)


@contextlib.asynccontextmanager
async def running(settings, feed: PushFeed | None = None, notifier: ListNotifier | None = None):
    """The daemon with its HTTP endpoint up; yields (daemon, base URL, feed)."""
    feed = feed or PushFeed()
    d = build_daemon(settings, default_registry(), store=MemoryStore(), feeds=[feed],
                     notifiers=[(notifier or ListNotifier(), None)])
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(d, stop))
    try:
        await asyncio.wait_for(feed.connected.wait(), 10)
        await until(lambda: d.http.port is not None, what="the HTTP endpoint to listen")
        yield d, f"http://127.0.0.1:{d.http.port}", feed
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15) == 0


def opening_ticks() -> list[PriceTick]:
    now = wall_clock_ms()
    return [PriceTick("BTC/USDT", 60000, now), PriceTick("ETH/USDT", 3000, now)]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_scraped_and_parsed(contract_config: Path) -> None:
    ticks = crash_ticks(wall_clock_ms())[:100]  # 50 steps down: health falls through warn (1.3)
    async with running(http_settings(contract_config)) as (d, url, feed):
        await push_each(d, feed, ticks)
        feed.stats = FeedStats(reconnects=2, bad_frames=1)  # the counters a live feed keeps
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
            held = samples(await resp.text())[("collateral_monitor_outbox_depth", ())]
        assert held >= 1  # the warn alert, waiting out group_wait_s in its channel
        await d.alerts.drain()
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            got = samples(await resp.text())
    p = "collateral_monitor_"
    assert got[(p + "account_health", (("account", "main"),))] == pytest.approx(float(d.monitor.engine.health[0]))
    assert got[(p + "account_level", (("account", "main"),))] == int(d.monitor.rules.depth[0]) >= 1
    assert got[(p + "account_level_firing", (("account", "main"), ("level", "warn")))] == 1
    assert got[(p + "feed_ticks_total", (("feed", "push"),))] == len(ticks)
    assert got[(p + "feed_live", (("feed", "push"),))] == 1
    assert got[(p + "engine_tick_seconds_count", ())] == len(ticks)
    assert got[(p + "engine_tick_seconds_bucket", (("le", "+Inf"),))] == len(ticks)
    assert 0 < got[(p + "engine_tick_seconds_sum", ())] < 10
    assert got[(p + "ticks_applied_total", ())] == len(ticks)
    assert got[(p + "level_events_total", (("kind", "firing"),))] >= 1
    assert got[(p + "outbox_depth", ())] == 0
    assert got[(p + "feed_reconnects_total", (("feed", "push"),))] == 2
    assert got[(p + "feed_bad_frames_total", (("feed", "push"),))] == 1
    assert got[(p + "stale_assets", ())] == 0
    assert got[(p + "asset_stale", (("asset", "BTC"),))] == 0
    assert (p + "event_loop_lag_seconds", ()) in got
    assert got[(p + "actions_total", (("outcome", "executed"),))] == 0
    assert got[(p + "ready", ())] == 1


async def test_healthz_is_503_until_live_and_when_feeds_die(contract_config: Path) -> None:
    async with running(http_settings(contract_config)) as (d, url, feed):
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/healthz") as resp:  # no price has arrived yet
                assert resp.status == 503
                assert (await resp.json())["live"] is False
            await push_each(d, feed, opening_ticks())
            async with http.get(url + "/healthz") as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body["live"] is True and body["status"].startswith("1 accounts, worst main health")
            d.feed_seen["push"] = time.monotonic() - 31  # the only feed silent past its stale_after_s (30)
            async with http.get(url + "/healthz") as resp:
                assert resp.status == 503


async def test_token_is_enforced_on_every_route(contract_config: Path, monkeypatch) -> None:
    monkeypatch.setenv("CM_TEST_HTTP_TOKEN", "s3cret-token")
    settings = http_settings(contract_config, {"token_env": "CM_TEST_HTTP_TOKEN"})
    async with running(settings) as (d, url, feed):
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/metrics", "/", "/status.json"):
                async with http.get(url + path) as resp:
                    assert resp.status == 401, path
                    assert "s3cret" not in await resp.text()
                async with http.get(url + path, headers={"Authorization": "Bearer wrong"}) as resp:
                    assert resp.status == 401, path
            async with http.get(url + "/metrics", headers={"Authorization": "Bearer s3cret-token"}) as resp:
                assert resp.status == 200
            async with http.get(url + "/status.json?token=s3cret-token") as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(url + "/ws")
            ws = await http.ws_connect(url + "/ws?token=s3cret-token")
            first = orjson.loads((await ws.receive(timeout=5)).data)
            assert first["accounts"][0]["name"] == "main"
            await ws.close()


def test_token_required_off_loopback(contract_config: Path) -> None:
    with pytest.raises(ConfigError, match=r"http.*0\.0\.0\.0:9108.*token_env"):
        http_settings(contract_config, {"listen": "0.0.0.0:9108"})
    with pytest.raises(ConfigError, match="http.listen: .*host:port"):
        http_settings(contract_config, {"listen": "9108"})
    assert http_settings(contract_config, {"listen": "[::1]:9108"}).http.token_env is None  # loopback: optional


def test_missing_token_variable_is_a_config_error(contract_config: Path, monkeypatch) -> None:
    monkeypatch.delenv("CM_TEST_HTTP_TOKEN", raising=False)
    settings = http_settings(contract_config, {"listen": "0.0.0.0:0", "token_env": "CM_TEST_HTTP_TOKEN"})
    with pytest.raises(ConfigError, match="http.token_env: the environment variable CM_TEST_HTTP_TOKEN is not set"):
        build_daemon(settings, default_registry(), store=MemoryStore(), feeds=[PushFeed()])


async def test_port_in_use_is_a_config_error(contract_config: Path) -> None:
    async with running(http_settings(contract_config)) as (d, url, feed):
        taken = http_settings(contract_config, {"listen": f"127.0.0.1:{d.http.port}"})
        other = build_daemon(taken, default_registry(), store=MemoryStore(), feeds=[PushFeed()])
        with pytest.raises(ConfigError, match=f"http.listen: cannot listen on 127.0.0.1:{d.http.port}"):
            await asyncio.wait_for(run_daemon(other, asyncio.Event()), 10)


async def test_websocket_pushes_when_a_price_moves(contract_config: Path) -> None:
    async with running(http_settings(contract_config)) as (d, url, feed):
        await push_each(d, feed, opening_ticks())
        async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws") as ws:
            first = orjson.loads((await ws.receive(timeout=5)).data)
            main = first["accounts"][0]
            assert main["health"] == pytest.approx((57000 + 24750) / 50000)
            btc = next(e for e in main["exposures"] if e["asset"] == "BTC")
            assert btc["liquidation_price"] < 60000 and btc["distance_pct"] < 0
            feed.push(PriceTick("BTC/USDT", 50000, wall_clock_ms()))
            update = orjson.loads((await ws.receive(timeout=5)).data)
            assert update["accounts"][0]["health"] == pytest.approx((47500 + 24750) / 50000)
            assert not math.isclose(update["accounts"][0]["health"], main["health"])


def test_tick_rate_and_latency_histogram() -> None:
    now = [100.2]
    rate = TickRate(window_s=10, clock=lambda: now[0])
    for _ in range(30):  # 30 in second 100
        rate.observe()
    now[0] = 101.5
    for _ in range(10):  # 10 in second 101 (in progress: not counted yet)
        rate.observe()
    assert rate.per_second() == 30.0  # one whole second seen so far
    now[0] = 102.0
    assert rate.per_second() == 20.0  # (30 + 10) / 2
    now[0] = 115.0
    assert rate.per_second() == 0.0 and rate.total == 40
    hist = LatencyHistogram((0.001, 0.01))
    for x in (0.0005, 0.001, 0.002, 5.0):
        hist.observe(x)
    assert hist.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert hist.count == 4 and hist.sum == pytest.approx(5.0035)


def test_outbox_depth_counts_what_the_channels_still_hold() -> None:
    manager = type("M", (), {"workers": {"slack": [1, 2, 3], "telegram": [4]}})()
    assert outbox_depth(manager) == 4
    assert outbox_depth(object()) == 0


async def test_store_metrics_of_a_redis_store(contract_config: Path, redis_server) -> None:
    from monitor.store.redis import RedisStore

    store = RedisStore(redis_server.url, "metrics")
    d = build_daemon(http_settings(contract_config), default_registry(), store=store, feeds=[PushFeed()])
    try:
        got = samples(generate_latest(daemon_registry(d)).decode())
    finally:
        await store.close()
    assert got[("collateral_monitor_store_buffered_writes", (("backend", "redis"),))] == 0
    assert got[("collateral_monitor_store_outage", (("backend", "redis"),))] == 0
