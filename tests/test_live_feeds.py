"""Live feeds against a local Binance-format server: the native driver and ccxt (unmodified),
pointed at it through ws_url / rest_url. Nothing here leaves the loopback interface."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import orjson
import pytest

from monitor.feeds.binance_wire import BinanceParser, endpoints
from monitor.feeds.stats import FeedStats, TickGate
from monitor.model import EventKind
from monitor.store.sqlite import MemoryStore
from monitor.wiring import build_daemon
from strategies import default_registry
from tests.binance_server import BinanceServer, book_ticker, mark_price
from tests.feed_helpers import Collector, cancel, live_feed, settings_with, start_task
from tests.test_daemon import ListNotifier, run_until

DRIVERS = ["native-aiohttp", "native-websockets", "ccxt"]


def feed_for(server, variant: str, symbols: list[str], **keys):
    if variant == "ccxt":
        return live_feed(server, "ccxt", symbols, **keys)
    return live_feed(server, "native", symbols, client=variant.removeprefix("native-"), **keys)


@pytest.fixture
async def server():
    s = BinanceServer()
    await s.start()
    yield s
    await s.stop()


# -- the wire format, checked against recorded real frames ----------------------------------
def recorded_frames(path: Path) -> list[dict]:
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            stamp, sep, payload = line.partition(": ")
            if sep and stamp.replace(".", "").isdigit():  # a received frame (not a connect, not a sent one)
                out.append(orjson.loads(payload))
    return out


@pytest.mark.parametrize("capture, futures", [("BINANCE.ws.1.0.gz", False), ("BINANCE_FUTURES.ws.1.0.gz", True)])
def test_parser_and_server_match_recorded_book_tickers(shared_data: Path, capture: str, futures: bool) -> None:
    frames = recorded_frames(shared_data / "ws_captures" / capture)
    books = [f for f in frames if f["stream"].endswith("@bookTicker")]
    others = [f for f in frames if not f["stream"].endswith("@bookTicker")]
    assert books and others
    # our server's bookTicker has exactly the recorded fields
    assert set(book_ticker("X", 1, 2, futures=futures)) == set(books[0]["data"])
    routes = {f["stream"]: (f["data"]["s"], 0) for f in books}
    stats, got = FeedStats(), Collector()
    parser = BinanceParser(routes, TickGate("rec", stats, got))
    received = 2_000_000_000_000  # replayed after every frame's own time
    for f in frames:
        parser.feed(orjson.dumps(f), received)
    assert len(got.ticks) + stats.out_of_order == len(books)
    first = books[0]["data"]
    assert got.ticks[0].bid == float(first["b"]) and got.ticks[0].ask == float(first["a"])
    assert got.ticks[0].price == pytest.approx((float(first["b"]) + float(first["a"])) / 2)
    assert got.ticks[0].ts_ms == first.get("E", received)  # spot book tickers carry no event time
    assert stats.bad_frames == len(others)  # streams not subscribed are counted, never used


def test_endpoints_follow_binance_layout() -> None:
    eps = endpoints({"BTC/USDT": "mid", "ETH/USDT": "last", "BTC/USDT:USDT": "mark", "ETH/USDT:USDT": "mid"},
                    testnet=False, ws_url=None, feed="f")
    assert {e.url: sorted(e.streams) for e in eps} == {
        "wss://stream.binance.com:9443/stream": ["btcusdt@bookTicker", "ethusdt@ticker"],
        "wss://fstream.binance.com/market/stream": ["btcusdt@markPrice@1s"],
        "wss://fstream.binance.com/public/stream": ["ethusdt@bookTicker"],
    }
    local = endpoints({"BTC/USDT": "mid"}, testnet=True, ws_url="ws://127.0.0.1:9", feed="f")
    assert local[0].url == "ws://127.0.0.1:9/stream"


def test_index_mode_reads_the_perpetual_streams() -> None:
    """A spot symbol's index is its USDⓈ-M pair's markPrice "i" (Binance), its linear ticker's
    "indexPrice" (Bybit): routed to our symbol, never to the perpetual's."""
    from monitor.feeds import bybit_wire

    modes = {"BTC/USDT": "index", "ETH/USDT:USDT": "index"}
    [binance] = endpoints(modes, testnet=False, ws_url=None, feed="f")
    assert binance.url == "wss://fstream.binance.com/market/stream"
    assert binance.routes == {"btcusdt@markPrice@1s": ("BTC/USDT", 3), "ethusdt@markPrice@1s": ("ETH/USDT:USDT", 3)}
    [bybit] = bybit_wire.endpoints(modes, testnet=False, ws_url=None, feed="f")
    assert bybit.url == "wss://stream.bybit.com/v5/public/linear"
    assert bybit.routes == {"tickers.BTCUSDT": ("BTC/USDT", "index"), "tickers.ETHUSDT": ("ETH/USDT:USDT", "index")}


# -- a normal stream ------------------------------------------------------------------------
@pytest.mark.parametrize("variant", DRIVERS)
async def test_stream_delivers_ticks_with_both_timestamps(server: BinanceServer, variant: str) -> None:
    feed = feed_for(server, variant, ["BTC/USDT", "ETH/USDT:USDT"])
    got = Collector()
    task = await start_task(feed.run(got))
    try:
        await server.wait_subscribed("btcusdt@bookTicker")
        await server.wait_subscribed("ethusdt@markPrice@1s")
        await server.publish("btcusdt@bookTicker", book_ticker("BTCUSDT", 60000.0, 60001.0))
        await server.publish("ethusdt@markPrice@1s", mark_price("ETHUSDT", 3000.5, event_ms=1_700_000_000_123))
        await got.wait_for(lambda ts: {t.symbol for t in ts} == {"BTC/USDT", "ETH/USDT:USDT"})
        combined = {c.combined for c in server.connections}
    finally:
        await cancel(task)
    btc = next(t for t in got.ticks if t.symbol == "BTC/USDT")
    eth = next(t for t in got.ticks if t.symbol == "ETH/USDT:USDT")
    assert (btc.price, btc.bid, btc.ask) == (60000.5, 60000.0, 60001.0)
    assert eth.price == 3000.5 and eth.ts_ms == 1_700_000_000_123  # the venue's event time ...
    assert eth.recv_ms is not None and eth.recv_ms > eth.ts_ms  # ... and ours
    assert feed.stats.ticks == 2 and feed.stats.bad_frames == 0 and feed.stats.last_message_ms is not None
    if variant != "ccxt":
        assert combined == {True}  # the combined-stream endpoint (two of them: spot and futures)
    else:  # ccxt loaded its markets from the local REST server, not the internet
        assert server.rest_hits.get("/api/v3/exchangeInfo") and server.rest_hits.get("/fapi/v1/exchangeInfo")


@pytest.mark.parametrize("variant", ["native-aiohttp", "ccxt"])
async def test_stream_updates_engine_and_reconnects_after_drop(server: BinanceServer, variant: str,
                                                                contract_config: Path) -> None:
    feed = feed_for(server, variant, ["BTC/USDT", "ETH/USDT"])
    d = build_daemon(settings_with(contract_config), default_registry(), store=MemoryStore(), feeds=[feed],
                     notifiers=[(ListNotifier(), None)])

    async def scenario() -> None:
        await server.wait_subscribed("btcusdt@bookTicker")
        await server.publish("btcusdt@bookTicker", book_ticker("BTCUSDT", 61000, 61002))
        await server.publish("ethusdt@bookTicker", book_ticker("ETHUSDT", 3100, 3100.2))
        await asyncio.wait_for(d.all_priced.wait(), 10)
        assert d.monitor.engine.price_of("BTC") == 61001
        await server.drop_all()  # mid-stream
        await server.wait_until(lambda: server.connects >= 2 and server.subscribers("btcusdt@bookTicker") > 0)
        await server.publish("btcusdt@bookTicker", book_ticker("BTCUSDT", 59000, 59002))
        await wait_price(d, "BTC", 59001)

    assert await run_until(d, scenario) == 0
    assert feed.stats.reconnects >= 1
    subscribes = [r for r in server.requests if r["method"] == "SUBSCRIBE" and "btcusdt@bookTicker" in r["params"]]
    assert len(subscribes) >= 2  # subscribed again on the new connection


async def wait_price(d, asset: str, price: float, timeout: float = 10.0) -> None:
    async def loop():
        while d.monitor.engine.price_of(asset) != price:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)


# -- a silent socket: the watchdog reconnects, staleness fires and resolves ------------------
@pytest.mark.parametrize("variant", ["native-websockets", "ccxt"])
async def test_silent_socket_goes_stale_then_fresh(server: BinanceServer, variant: str,
                                                   contract_config: Path) -> None:
    feed = feed_for(server, variant, ["BTC/USDT", "ETH/USDT"], watchdog_s=0.6)
    notifier = ListNotifier()
    d = build_daemon(settings_with(contract_config, stale_after_s=1.5), default_registry(), store=MemoryStore(),
                     feeds=[feed], notifiers=[(notifier, None)])

    async def scenario() -> None:
        await server.wait_subscribed("btcusdt@bookTicker")
        for n in range(2):  # first prices, then silence with the socket open
            await server.publish("btcusdt@bookTicker", book_ticker("BTCUSDT", 61000 + n, 61002 + n))
            await server.publish("ethusdt@bookTicker", book_ticker("ETHUSDT", 3100, 3101))
        await notifier.wait_for(lambda e: e.kind is EventKind.STALE)
        await server.wait_until(lambda: feed.stats.watchdog_trips >= 1 and server.connects >= 2)
        await server.wait_subscribed("btcusdt@bookTicker")
        await server.publish("btcusdt@bookTicker", book_ticker("BTCUSDT", 61500, 61502))
        await server.publish("ethusdt@bookTicker", book_ticker("ETHUSDT", 3150, 3151))
        await notifier.wait_for(lambda e: e.kind is EventKind.FRESH)

    assert await run_until(d, scenario) == 0
    stale = next(e for e in notifier.events if e.kind is EventKind.STALE)
    assert set(stale.stale_assets) == {"BTC", "ETH"}
    assert not d.plans.qsize() and d.monitor.engine.price_of("BTC") == 61501


# -- bad input ------------------------------------------------------------------------------
async def test_malformed_frames_are_counted_and_skipped(server: BinanceServer) -> None:
    feed = feed_for(server, "native-aiohttp", ["BTC/USDT"])
    got = Collector()
    task = await start_task(feed.run(got))
    bad = ["not json", "[1, 2]", '{"stream": "btcusdt@bookTicker"}',
           '{"stream": "btcusdt@bookTicker", "data": {"s": "BTCUSDT", "b": "abc", "a": "1"}}',
           '{"stream": "btcusdt@bookTicker", "data": {"s": "BTCUSDT", "b": "NaN", "a": "1"}}',
           '{"stream": "btcusdt@bookTicker", "data": {"s": "BTCUSDT", "b": "0", "a": "0"}}',
           '{"stream": "btcusdt@bookTicker", "data": {"s": "BTCUSDT", "b": "-5", "a": "-4"}}',
           '{"stream": "btcusdt@bookTicker", "data": {"s": "BTCUSDT", "b": "inf", "a": "inf"}}',
           '{"stream": "btcusdt@bookTicker", "data": {"s": "BTCUSDT", "b": "101", "a": "100"}}',  # crossed
           '{"stream": "dogeusdt@bookTicker", "data": {"s": "DOGEUSDT", "b": "1", "a": "2"}}']
    try:
        await server.wait_subscribed("btcusdt@bookTicker")
        for raw in bad:
            await server.send_raw(raw)
        await server.publish("btcusdt@bookTicker", book_ticker("BTCUSDT", 100, 102))
        await got.wait_for(lambda ts: len(ts) >= 1)
    finally:
        await cancel(task)
    assert [t.price for t in got.ticks] == [101]
    assert feed.stats.bad_frames == len(bad) and feed.stats.messages == len(bad) + 2  # + the subscribe ack


async def test_out_of_order_timestamps_are_skipped(server: BinanceServer) -> None:
    feed = feed_for(server, "native-websockets", ["BTC/USDT:USDT"])
    got = Collector()
    task = await start_task(feed.run(got))
    try:
        await server.wait_subscribed("btcusdt@markPrice@1s")
        for ts, price in [(1_000, 100.0), (900, 50.0), (1_100, 101.0)]:
            await server.publish("btcusdt@markPrice@1s", mark_price("BTCUSDT", price, event_ms=1_700_000_000_000 + ts))
        await got.wait_for(lambda ts: len(ts) >= 2)
    finally:
        await cancel(task)
    assert [t.price for t in got.ticks] == [100.0, 101.0]
    assert feed.stats.out_of_order == 1


# -- index prices: what venues value collateral at -------------------------------------------
@pytest.mark.parametrize("variant", DRIVERS)
async def test_index_mode_reads_the_index_of_binance_mark_price_streams(server: BinanceServer, variant: str) -> None:
    feed = feed_for(server, variant, ["BTC/USDT", "ETH/USDT:USDT"], price="index")
    got = Collector()
    task = await start_task(feed.run(got))
    try:
        await server.wait_subscribed("btcusdt@markPrice@1s")  # the spot pair's index comes from USDⓈ-M
        await server.wait_subscribed("ethusdt@markPrice@1s")
        await server.publish("btcusdt@markPrice@1s", mark_price("BTCUSDT", 60010.0, index=59990.5))
        await server.publish("ethusdt@markPrice@1s", mark_price("ETHUSDT", 3001.0, index=2999.25))
        await got.wait_for(lambda ts: {t.symbol for t in ts} == {"BTC/USDT", "ETH/USDT:USDT"})
    finally:
        await cancel(task)
    assert {t.symbol: t.price for t in got.ticks} == {"BTC/USDT": 59990.5, "ETH/USDT:USDT": 2999.25}  # "i", not "p"
    assert all(t.bid is None and t.ask is None for t in got.ticks)  # an index is no book
    assert feed.stats.bad_frames == 0
    if variant == "ccxt":  # only the perpetuals' markets were loaded, for the spot symbol too
        assert server.rest_hits.get("/fapi/v1/exchangeInfo") and not server.rest_hits.get("/api/v3/exchangeInfo")


@pytest.mark.parametrize("variant", ["native-aiohttp", "native-websockets", "ccxt"])
async def test_index_mode_reads_bybit_linear_index_through_deltas(variant: str) -> None:
    from tests.bybit_server import BybitServer, linear_ticker

    server = BybitServer()
    await server.start()
    driver, _, client = variant.partition("-")
    keys = {"client": client} if client else {}
    feed = live_feed(server, driver, ["BTC/USDT", "ETH/USDT:USDT"], name="bybit", exchange="bybit", price="index",
                     **keys)
    got = Collector()
    task = await start_task(feed.run(got))
    try:
        await server.wait_subscribed("tickers.BTCUSDT")
        await server.wait_subscribed("tickers.ETHUSDT")
        await server.publish("tickers.BTCUSDT", linear_ticker("BTCUSDT", 60000, 60010.5, 59999.5, 60000.5, 60005.0))
        await got.wait_for(lambda ts: len(ts) >= 1)
        await server.publish("tickers.BTCUSDT", {"symbol": "BTCUSDT", "indexPrice": "59990.00"}, kind="delta")
        await got.wait_for(lambda ts: len(ts) >= 2)
        # a delta without the index: the last one stands, the mark is not taken for it
        await server.publish("tickers.BTCUSDT", {"symbol": "BTCUSDT", "markPrice": "59950.25"}, kind="delta")
        await got.wait_for(lambda ts: len(ts) >= 3)
        await server.publish("tickers.ETHUSDT", linear_ticker("ETHUSDT", 3000, 3001, 2999.9, 3000.1, 2999.5))
        await got.wait_for(lambda ts: any(t.symbol == "ETH/USDT:USDT" for t in ts))
    finally:
        await cancel(task)
        await server.stop()
    assert [t.price for t in got.ticks if t.symbol == "BTC/USDT"] == [60005.0, 59990.0, 59990.0]
    assert [t.price for t in got.ticks if t.symbol == "ETH/USDT:USDT"] == [2999.5]
    assert all(t.bid is None and t.ask is None for t in got.ticks)
    assert feed.stats.bad_frames == 0
    if driver == "ccxt":
        assert set(server.rest_hits) == {"linear"}  # the spot symbol's index: linear markets only
    else:
        assert [e.url.rsplit("/", 1)[1] for e in feed.endpoints] == ["linear"]


async def test_rest_fallback_polls_index_prices() -> None:
    """With the websocket refused from the start, the REST fallback gives the index: Binance's
    premiumIndex "indexPrice" (its tickers have none), Bybit's linear tickers' "indexPrice"."""
    from tests.bybit_server import BybitServer, rest_linear_ticker

    binance, bybit = BinanceServer(), BybitServer()
    binance.note_ticker("BTCUSDT", last=60000.0, bid=59999.0, ask=60001.0, mark=60010.0, index=59990.5)
    bybit.tickers["BTCUSDT"] = rest_linear_ticker("BTCUSDT", 60000.0, 60010.0, 59980.25)
    feeds, tasks, got = [], [], {"binance": Collector(), "bybit": Collector()}
    for venue, srv in (("binance", binance), ("bybit", bybit)):
        await srv.start()
        srv.ws_ok = False
        feeds.append(live_feed(srv, "native", ["BTC/USDT"], name=venue, exchange=venue, price="index",
                               rest_poll_s=0.05))
        tasks.append(await start_task(feeds[-1].run(got[venue])))
    try:
        for c in got.values():
            await c.wait_for(lambda ts: len(ts) >= 1)
    finally:
        for t in tasks:
            await cancel(t)
        await binance.stop()
        await bybit.stop()
    assert [(t.symbol, t.price, t.bid) for t in got["binance"].ticks[:1]] == [("BTC/USDT", 59990.5, None)]
    assert [(t.symbol, t.price, t.bid) for t in got["bybit"].ticks[:1]] == [("BTC/USDT", 59980.25, None)]
    assert binance.rest_hits.get("/fapi/v1/premiumIndex") and not binance.rest_hits.get("/api/v3/ticker/24hr")
    assert bybit.rest_hits.get("tickers/linear") and all(f.stats.rest_polls >= 1 for f in feeds)


# -- REST fallback while the socket is down -------------------------------------------------
async def test_rest_fallback_polls_while_socket_is_down(server: BinanceServer) -> None:
    feed = feed_for(server, "native-aiohttp", ["BTC/USDT"], rest_poll_s=0.05)
    got = Collector()
    server.note_ticker("BTCUSDT", last=60000.0, bid=59999.0, ask=60001.0)
    task = await start_task(feed.run(got))
    try:
        await server.wait_subscribed("btcusdt@bookTicker")
        server.ws_ok = False  # the venue's websocket is down, its REST API is not
        await server.drop_all()
        server.note_ticker("BTCUSDT", last=55000.0, bid=54999.0, ask=55001.0)
        await got.wait_for(lambda ts: any(t.price == 55000.0 for t in ts))
        server.ws_ok = True
        await server.wait_subscribed("btcusdt@bookTicker")
        await server.publish("btcusdt@bookTicker", book_ticker("BTCUSDT", 56000, 56002))
        await got.wait_for(lambda ts: ts[-1].price == 56001)
    finally:
        await cancel(task)
    assert feed.stats.rest_polls >= 1 and server.rest_hits.get("/api/v3/ticker/24hr")
    polls = feed.stats.rest_polls
    await asyncio.sleep(0)  # the poller is cancelled with the feed: no request after
    assert feed.stats.rest_polls == polls


# -- several sources: a suspect outlier from one of two never trades ------------------------
async def test_outlier_from_one_of_two_sources_does_not_trade(contract_config: Path) -> None:
    a, b = BinanceServer(), BinanceServer()
    await a.start()
    await b.start()
    feeds = [feed_for(a, "native-aiohttp", ["BTC/USDT", "ETH/USDT"]),
             live_feed(b, "native", ["BTC/USDT", "ETH/USDT"], name="second", client="websockets")]
    notifier = ListNotifier()
    cfg = [{"name": "binance", "driver": "native", "symbols": ["BTC/USDT", "ETH/USDT"]},
           {"name": "second", "driver": "native", "symbols": ["BTC/USDT", "ETH/USDT"]}]
    d = build_daemon(settings_with(contract_config, feeds=cfg), default_registry(), store=MemoryStore(),
                     feeds=feeds, notifiers=[(notifier, None)])

    async def both(btc: float, eth: float, servers) -> None:
        for s in servers:
            await s.publish("btcusdt@bookTicker", book_ticker("BTCUSDT", btc, btc))
            await s.publish("ethusdt@bookTicker", book_ticker("ETHUSDT", eth, eth))

    async def scenario() -> None:
        for s in (a, b):
            await s.wait_subscribed("ethusdt@bookTicker")
        await both(60000, 3000, [a, b])
        await asyncio.wait_for(d.all_priced.wait(), 10)
        await both(36000, 1800, [b])  # only the second source crashes 40%
        await asyncio.wait_for(wait_until(lambda: d.combiner.suspect >= 2), 10)
        await both(60010, 3001, [a])  # the trusted source ticks on, and is what the engine sees
        await wait_price(d, "BTC", 60010)
        assert not notifier.events and d.plans.empty() and not held_plans(d)
        await both(36000, 1800, [a])  # the first agrees: a real crash
        await notifier.wait_for(lambda e: e.kind is EventKind.FIRING)

    try:
        assert await run_until(d, scenario) == 0
    finally:
        await a.stop()
        await b.stop()
    assert d.monitor.engine.price_of("BTC") == 36000
    assert [e.level for e in notifier.events if e.kind is EventKind.FIRING] == ["warn"]


def held_plans(d) -> bool:
    """Any account with a plan in flight (planned, not settled)."""
    return any(st.in_flight for st in d.monitor.rules.state)


async def wait_until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


# -- Bybit v5 public tickers through ccxt ---------------------------------------------------
async def test_ccxt_bybit_v5_tickers_give_mark_prices() -> None:
    from tests.bybit_server import BybitServer, linear_ticker

    server = BybitServer()
    await server.start()
    feed = live_feed(server, "ccxt", ["BTC/USDT:USDT"], name="bybit", exchange="bybit")
    got = Collector()
    task = await start_task(feed.run(got))
    try:
        await server.wait_subscribed("tickers.BTCUSDT")
        await server.publish("tickers.BTCUSDT", linear_ticker("BTCUSDT", 60000, 60010.5, 59999.5, 60000.5))
        await got.wait_for(lambda ts: len(ts) >= 1)
        await server.publish("tickers.BTCUSDT", {"symbol": "BTCUSDT", "markPrice": "59950.25",
                                                 "indexPrice": "59951.00"}, kind="delta")
        await got.wait_for(lambda ts: len(ts) >= 2)
    finally:
        await cancel(task)
        await server.stop()
    assert [t.price for t in got.ticks] == [60010.5, 59950.25]  # mark price, default for a perpetual
    assert server.rest_hits == {"linear": server.rest_hits["linear"]}  # only linear markets, from loopback


@pytest.mark.parametrize("client", ["aiohttp", "websockets"])
async def test_native_bybit_v5_tickers_snapshot_delta_and_ping(client: str) -> None:
    from monitor.feeds import bybit_wire
    from tests.bybit_server import BybitServer, linear_ticker

    server = BybitServer()
    await server.start()
    feed = live_feed(server, "native", ["BTC/USDT:USDT", "ETH/USDT:USDT"], name="bybit", exchange="bybit",
                     client=client)
    feed.venue = bybit_wire_fast_ping(feed.venue)
    got = Collector()
    task = await start_task(feed.run(got))
    try:
        await server.wait_subscribed("tickers.ETHUSDT")
        await server.publish("tickers.BTCUSDT", linear_ticker("BTCUSDT", 60000, 60010.5, 59999.5, 60000.5))
        await server.publish("tickers.BTCUSDT", {"symbol": "BTCUSDT", "bid1Price": "59990.00"}, kind="delta")
        await server.publish("tickers.BTCUSDT", {"symbol": "BTCUSDT", "markPrice": "59950.25"}, kind="delta")
        await server.publish("tickers.ETHUSDT", {"symbol": "ETHUSDT", "markPrice": "abc"}, kind="delta")
        await got.wait_for(lambda ts: len(ts) >= 3)
        await asyncio.wait_for(wait_until(lambda: {"op": "ping"} in server.requests), 5)
    finally:
        await cancel(task)
        await server.stop()
    assert [t.price for t in got.ticks] == [60010.5, 60010.5, 59950.25]  # the mark, merged from deltas
    assert (got.ticks[1].bid, got.ticks[1].ask) == (59990.0, 60000.5)
    assert feed.stats.bad_frames == 1  # a delta before any snapshot, and not a number
    assert server.requests[0] == {"op": "subscribe", "args": ["tickers.BTCUSDT", "tickers.ETHUSDT"], "req_id": "1"}
    # Bybit takes at most 10 topics a request
    assert [len(orjson.loads(m)["args"]) for m in bybit_wire.subscribe_messages([f"t{i}" for i in range(25)])] \
        == [10, 10, 5]


def bybit_wire_fast_ping(venue):
    from dataclasses import replace
    return replace(venue, ping_every_s=0.05)


def test_a_tick_from_the_future_is_skipped() -> None:
    """Its time would become event time for good: every other asset stale, every true tick old."""
    got, stats = [], FeedStats()
    gate = TickGate("f", stats, got.append)
    gate.emit("BTC/USDT", 100.0, 1_000_000 + 3_600_000, None, None, recv_ms=1_000_000)  # an hour ahead
    gate.emit("BTC/USDT", 101.0, 1_000_000 + 2_000, None, None, recv_ms=1_000_000)  # clocks seconds apart: fine
    assert [t.price for t in got] == [101.0] and stats.bad_frames == 1
