"""Blind from the start: a feed that never delivers a price leaves its accounts STALE, with
health and equity unknown (null) wherever they are read: status, /status.json, /healthz,
metrics, alerts, log lines and the status page."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
import structlog

from monitor.config import load_settings, parse_settings
from monitor.logs import configure_logging
from monitor.model import EventKind, PriceTick, wall_clock_ms
from monitor.service import log_status, run_daemon
from monitor.store.sqlite import MemoryStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.feed_helpers import live_feed
from tests.test_daemon import ListNotifier, PushFeed, until
from tests.test_http import samples

PAGE = Path(__file__).resolve().parents[1] / "monitor" / "http" / "page.html"


def blind_settings(config: Path, stale_after_s: float = 1.0):
    raw = load_settings(config).model_dump(exclude_none=True)
    raw["daemon"] = {**raw["daemon"], "restart_backoff_s": 0.01}
    raw["accounts"] = [{**a, "stale_after_s": stale_after_s} for a in raw["accounts"]]
    raw["http"] = {"listen": "127.0.0.1:0", "push_every_s": 0.05}
    return parse_settings(raw)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused, as with a venue out of reach."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Unreachable:
    def __init__(self) -> None:
        port = closed_port()
        self.ws_url, self.rest_url = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def daemon_up(settings, feed, notifier: ListNotifier):
    d = build_daemon(settings, default_registry(), store=MemoryStore(), feeds=[feed], notifiers=[(notifier, None)])
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(d, stop))
    try:
        await until(lambda: d.http.port is not None, what="the HTTP endpoint to listen")
        yield d, f"http://127.0.0.1:{d.http.port}"
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15) == 0


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read()


async def test_a_venue_out_of_reach_leaves_its_accounts_blind_and_says_so(contract_config: Path) -> None:
    feed = live_feed(Unreachable(), "native", ["BTC/USDT", "ETH/USDT"], backoff_s=0.05, backoff_max_s=0.2)
    notifier = ListNotifier()
    started = wall_clock_ms()
    async with daemon_up(blind_settings(contract_config), feed, notifier) as (d, url):
        stale = await notifier.wait_for(lambda e: e.kind is EventKind.STALE)
        status, body = await get(url + "/status.json")
        row = orjson.loads(body)["accounts"][0]
        healthz_status, healthz = await get(url + "/healthz")
        _, metrics = await get(url + "/metrics")
    assert stale.detail == "no price for BTC, ETH since start" and stale.stale_assets == ("BTC", "ETH")
    assert math.isnan(stale.health) and started < stale.ts_ms <= wall_clock_ms()
    assert status == 200 and (row["health"], row["native"], row["equity"]) == (None, None, None)  # not -50000
    assert row["stale"] is True and row["unpriced"] == ["BTC", "ETH"]
    assert healthz_status == 503 and orjson.loads(healthz)["blind"] == 1
    assert "1 blind" in orjson.loads(healthz)["status"]
    got = samples(metrics.decode())
    assert math.isnan(got[("collateral_monitor_account_equity", (("account", "main"),))])
    assert math.isnan(got[("collateral_monitor_account_health", (("account", "main"),))])
    assert got[("collateral_monitor_accounts_blind", ())] == 1


async def test_healthz_is_503_while_an_account_is_blind_though_a_feed_delivers(contract_config: Path) -> None:
    feed = PushFeed()  # BTC ticks, ETH never does (a wrong symbol, a stream nobody parses)
    notifier = ListNotifier()
    async with daemon_up(blind_settings(contract_config, stale_after_s=30), feed, notifier) as (d, url):
        await asyncio.wait_for(feed.connected.wait(), 10)
        feed.push(PriceTick("BTC/USDT", 60000, wall_clock_ms()))
        await until(lambda: d.ticks_applied == 1, what="the BTC tick applied")
        status, body = await get(url + "/healthz")
        assert status == 503 and orjson.loads(body) | {"status": ""} == {"live": True, "blind": 1, "status": ""}
        row = orjson.loads((await get(url + "/status.json"))[1])["accounts"][0]
        assert row["unpriced"] == ["ETH"] and row["equity"] is None and row["stale"] is False
        feed.push(PriceTick("ETH/USDT", 3000, wall_clock_ms()))
        await until(lambda: d.ticks_applied == 2, what="the ETH tick applied")
        status, body = await get(url + "/healthz")
        assert status == 200 and orjson.loads(body)["blind"] == 0


def test_the_account_log_line_is_strict_json_while_blind(contract_config: Path, monkeypatch) -> None:
    d = build_daemon(blind_settings(contract_config), default_registry(), store=MemoryStore(), feeds=[PushFeed()],
                     notifiers=[(ListNotifier(), None)])
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    configure_logging("json")
    try:
        log_status(d)
    finally:
        structlog.reset_defaults()
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]  # orjson refuses NaN
    account = next(x for x in lines if x["event"] == "account")
    assert account["health"] is None and account["equity"] is None
    assert json.loads(json.dumps(account, allow_nan=False)) == account


# -- the status page's own logic, in node ---------------------------------------------------
NODE = shutil.which("node")


def page_eval(expression: str, snapshot: dict) -> object:
    """Evaluates `expression` in the page's script (DOM and socket stubbed) with `s` = snapshot."""
    script = PAGE.read_text().split("<script>", 1)[1].split("</script>", 1)[0]
    harness = """
const vm = require("vm");
const node = () => ({ textContent: "", className: "", style: {}, replaceChildren() {}, append() {},
                      setAttribute() {} });
const nodes = {};
const ctx = { console, setTimeout, location: { protocol: "http:", host: "x", pathname: "/", search: "" },
  document: { getElementById: id => (nodes[id] = nodes[id] || node()), createElement: node,
              createTextNode: t => t },
  WebSocket: class { constructor() {} }, Node: class {} };
const [script, snapshot, expression] = process.argv.slice(-3);
vm.createContext(ctx);
vm.runInContext(script, ctx);
ctx.s = JSON.parse(snapshot);
vm.runInContext("render(s)", ctx);
process.stdout.write(JSON.stringify(vm.runInContext(expression, ctx)));
"""
    done = subprocess.run([NODE, "-e", harness, script, json.dumps(snapshot), expression], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_the_page_says_no_price_and_its_badge_follows_the_feeds(contract_config: Path) -> None:
    feed = live_feed(Unreachable(), "native", ["BTC/USDT", "ETH/USDT"], backoff_s=0.05, backoff_max_s=0.2)
    async with daemon_up(blind_settings(contract_config, stale_after_s=30), feed, ListNotifier()) as (d, url):
        blind = orjson.loads((await get(url + "/status.json"))[1])
    row = blind["accounts"][0]
    assert page_eval("levelText(s.accounts[0])", blind) == "no price (BTC, ETH)"
    assert page_eval("[document.getElementById('conn').textContent, document.getElementById('conn').className]",
                     blind) == ["no feed delivers", "badge off"]
    assert page_eval("fmt(s.accounts[0].health, 4) + ' ' + fmt(s.accounts[0].equity, 6)", blind) == "unknown unknown"
    stale = {**row, "unpriced": [], "stale": True}
    priced = {**row, "unpriced": [], "stale": False, "health": 1.6, "level": None}
    assert page_eval("[levelText(s.accounts[0]), levelText(s.accounts[1])]",
                     {**blind, "accounts": [stale, priced]}) == ["stale", "ok"]
    two = [{"name": "a", "live": True}, {"name": "b", "live": False}]
    assert page_eval("document.getElementById('conn').textContent", {**blind, "feeds": two}) == "feeds live 1/2"
    assert page_eval("document.getElementById('conn').className", {**blind, "feeds": two[:1]}) == "badge on"


# -- a venue out of reach: one clear line, at a bounded cadence, never silence ---------------
def test_retry_log_says_it_once_a_minute_for_as_long_as_it_lasts() -> None:
    from monitor.feeds.backoff import RetryLog

    now = [0.0]
    retry = RetryLog("binance", every_s=60, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for _ in range(600):  # ten minutes of a failure a second
            retry.failed("at wss://stream.binance.com:9443/stream", 30, "ClientConnectorError: refused")
            now[0] += 1
        retry.reached("at wss://stream.binance.com:9443/stream")
        retry.failed("at wss://stream.binance.com:9443/stream", 0.5, "refused")  # a new outage: said at once
    assert [x["attempts"] for x in logs] == [1, 61, 121, 181, 241, 301, 361, 421, 481, 541, 1]
    assert logs[0]["event"] == "cannot reach binance at wss://stream.binance.com:9443/stream: retrying every 30 s"
    assert logs[0]["log_level"] == "warning" and logs[-1]["event"].endswith("retrying every 0.5 s")


async def test_an_unreachable_venue_is_never_silent(monkeypatch) -> None:
    from monitor.feeds.backoff import RetryLog

    venue = Unreachable()
    feed = live_feed(venue, "native", ["BTC/USDT"], backoff_s=0.02, backoff_max_s=0.05)
    feed._retry_log = RetryLog("binance", every_s=0.5)  # a minute, shortened
    with structlog.testing.capture_logs() as logs:
        lines = lambda: [x for x in logs if x["event"].startswith("cannot reach binance")]  # noqa: E731
        task = asyncio.ensure_future(feed.run(lambda t: None))
        try:
            await until(lambda: len(lines()) >= 4, what="the fourth line about the venue")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    said = lines()
    assert said[0]["event"] == f"cannot reach binance at {venue.ws_url}/stream: retrying every 0.02 s"
    assert said[-1]["event"].endswith("retrying every 0.05 s")  # the backoff's cap by then
    attempts = [x["attempts"] for x in said]
    assert attempts == sorted(attempts) and attempts[-1] > len(said)  # counted always, said sparingly
    assert feed.stats.reconnects >= attempts[-1]
