"""Clocks on live feeds, over real local websocket servers: a tick stamped ahead of our clock
is a bad tick (and never a price), and a symbol's ticks are ordered by the venue's sequence
number where it sends one, by time otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.config import FeedSettings
from monitor.errors import ConfigError
from monitor.model import EventKind, wall_clock_ms
from monitor.store.sqlite import MemoryStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.binance_server import BinanceServer, book_ticker, ticker_24hr
from tests.feed_helpers import Collector, cancel, live_feed, settings_with, start_task
from tests.test_daemon import ListNotifier, run_until, until

AHEAD_MS = 50_000  # a venue clock (or one frame) 50 s in the future


@pytest.fixture
async def server():
    s = BinanceServer()
    await s.start()
    yield s
    await s.stop()


def last_feed(server: BinanceServer, **keys):
    """BTC and ETH spot at their last price: the 24hr ticker carries the venue's event time."""
    return live_feed(server, "native", ["BTC/USDT", "ETH/USDT"], price="last", **keys)


async def publish_last(server: BinanceServer, symbol_id: str, price: float, ts_ms: int) -> None:
    stream = f"{symbol_id.lower()}@ticker"
    await server.publish(stream, ticker_24hr(symbol_id, price, price, price, event_ms=ts_ms))


async def open_prices(server: BinanceServer, d) -> None:
    await server.wait_subscribed("ethusdt@ticker")
    now = wall_clock_ms()
    await publish_last(server, "BTCUSDT", 60000, now)
    await publish_last(server, "ETHUSDT", 3000, now)
    await asyncio.wait_for(d.all_priced.wait(), 10)


# -- max_clock_skew_s ------------------------------------------------------------------------
async def test_a_tick_from_the_future_is_bad_and_the_next_true_one_counts(server: BinanceServer,
                                                                            contract_config: Path) -> None:
    feed = last_feed(server)
    d = build_daemon(settings_with(contract_config), default_registry(), store=MemoryStore(), feeds=[feed],
                     notifiers=[(ListNotifier(), None)])

    async def scenario() -> None:
        await open_prices(server, d)
        await publish_last(server, "BTCUSDT", 1.0, wall_clock_ms() + AHEAD_MS)  # a crash, from the future
        await until(lambda: feed.stats.bad_frames == 1, what="the future tick counted as bad")
        assert d.monitor.engine.price_of("BTC") == 60000
        await publish_last(server, "BTCUSDT", 61000, wall_clock_ms())  # the symbol is not frozen
        await until(lambda: d.monitor.engine.price_of("BTC") == 61000, what="the true tick applied")

    assert await run_until(d, scenario) == 0
    assert d.monitor.now_ms <= wall_clock_ms() + 2_000  # event time never ran ahead with it
    assert not d.plans.qsize() and d.events["firing"] == 0


async def test_a_symbol_sending_only_rejected_ticks_goes_stale(server: BinanceServer,
                                                               contract_config: Path) -> None:
    feed = last_feed(server)
    notifier = ListNotifier()
    d = build_daemon(settings_with(contract_config, stale_after_s=1.0), default_registry(), store=MemoryStore(),
                     feeds=[feed], notifiers=[(notifier, None)])

    async def keep_ticking() -> None:  # BTC only from the future, ETH true: paced, not waited on
        while True:
            now = wall_clock_ms()
            await publish_last(server, "BTCUSDT", 60500, now + AHEAD_MS)
            await publish_last(server, "ETHUSDT", 3000, now)
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        await open_prices(server, d)
        ticking = asyncio.ensure_future(keep_ticking())
        try:
            stale = await notifier.wait_for(lambda e: e.kind is EventKind.STALE)
        finally:
            await cancel(ticking)
        assert stale.stale_assets == ("BTC",)
        assert stale.ts_ms <= wall_clock_ms()  # not stamped in the future

    assert await run_until(d, scenario) == 0
    assert feed.stats.bad_frames >= 1 and d.monitor.engine.price_of("BTC") == 60000


async def test_max_clock_skew_is_a_feed_setting(server: BinanceServer) -> None:
    behind = [-7_000]  # our clock 7 s behind the venue's, read at receipt through the injected clock
    feed = last_feed(server, max_clock_skew_s=10)
    feed._clock_ms = lambda: wall_clock_ms() + behind[0]
    got = Collector()
    task = await start_task(feed.run(got))
    try:
        await server.wait_subscribed("btcusdt@ticker")
        await publish_last(server, "BTCUSDT", 100, wall_clock_ms())  # 7 s ahead of us: within 10 s
        await got.wait_for(lambda ts: len(ts) == 1)
        behind[0] = -12_000
        await publish_last(server, "BTCUSDT", 101, wall_clock_ms() + 1)  # 12 s ahead: bad
        await until(lambda: feed.stats.bad_frames == 1, what="the tick beyond the skew counted as bad")
    finally:
        await cancel(task)
    assert [t.price for t in got.ticks] == [100]
    base = {"name": "f", "driver": "native", "symbols": ["BTC/USDT"]}
    assert FeedSettings(**base).max_clock_skew_s == 2
    for bad in (0, -1, 61, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_clock_skew_s"):
            FeedSettings(**base, max_clock_skew_s=bad)


def test_max_clock_skew_rejects_bad_values_in_one_line(contract_config: Path) -> None:
    with pytest.raises(ConfigError, match=r"feeds.*max_clock_skew_s"):
        settings_with(contract_config, feeds=[{"name": "f", "driver": "native", "symbols": ["BTC/USDT"],
                                               "max_clock_skew_s": 3600}])


# -- the venue's sequence numbers ------------------------------------------------------------
async def test_binance_book_tickers_are_ordered_by_update_id(server: BinanceServer) -> None:
    feed = live_feed(server, "native", ["BTC/USDT:USDT"], price="mid")  # USDⓈ-M: "u" and "E"
    got = Collector()
    task = await start_task(feed.run(got))
    t = wall_clock_ms() - 10_000
    stream = "btcusdt@bookTicker"

    async def send(update_id: int, event_ms: int, price: float) -> None:
        await server.publish(stream, book_ticker("BTCUSDT", price, price, futures=True, update_id=update_id,
                                                 event_ms=event_ms))
    try:
        await server.wait_subscribed(stream)
        await send(10, t + 100, 100)
        await send(11, t + 50, 101)  # newer book, earlier event time: a price all the same
        await send(9, t + 200, 50)  # an older book with a later time: skipped
        await send(12, t + 150, 102)
        await got.wait_for(lambda ts: len(ts) == 3)
        await server.drop_all()  # a new connection: the sequence may start over, time orders it
        await server.wait_until(lambda: server.connects >= 2 and server.subscribers(stream) > 0)
        await send(3, t + 300, 103)
        await got.wait_for(lambda ts: len(ts) == 4)
    finally:
        await cancel(task)
    assert [x.price for x in got.ticks] == [100, 101, 102, 103]
    assert [x.ts_ms for x in got.ticks] == [t + 100, t + 100, t + 150, t + 300]  # never back in time
    assert feed.stats.out_of_order == 1


async def test_bybit_tickers_are_ordered_by_cross_sequence() -> None:
    from tests.bybit_server import BybitServer, linear_ticker

    server = BybitServer()
    await server.start()
    feed = live_feed(server, "native", ["BTC/USDT:USDT"], name="bybit", exchange="bybit")
    got = Collector()
    task = await start_task(feed.run(got))
    topic, t = "tickers.BTCUSDT", wall_clock_ms() - 10_000

    async def mark(price: float, cs: int, ts: int, kind: str = "delta") -> None:
        data = linear_ticker("BTCUSDT", price, price, price - 1, price + 1) if kind == "snapshot" else \
            {"symbol": "BTCUSDT", "markPrice": f"{price:.2f}"}
        await server.publish(topic, data, kind, cs=cs, ts=ts)
    try:
        await server.wait_subscribed(topic)
        await mark(100, 10, t, "snapshot")
        await mark(101, 11, t - 5)  # later in the engine's sequence, earlier stamp: counts
        await mark(50, 9, t + 10)  # an older sequence: skipped
        await mark(102, 11, t + 1)  # the same sequence, later: a mark-only update counts
        await mark(103, 3, t + 20, "snapshot")  # a snapshot starts the order afresh (a restart)
        await got.wait_for(lambda ts: len(ts) == 4)
    finally:
        await cancel(task)
        await server.stop()
    assert [x.price for x in got.ticks] == [100, 101, 102, 103]
    assert feed.stats.out_of_order == 1
