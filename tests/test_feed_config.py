"""Live feed settings, the feed factory, the source combiner and reconnect delays."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from monitor.config import FeedSettings, load_settings
from monitor.errors import ConfigError
from monitor.feeds.backoff import Backoff
from monitor.feeds.ccxt_exchange import make_exchange, rebase_urls
from monitor.feeds.ccxt_feed import CcxtFeed
from monitor.feeds.combine import build_combiner
from monitor.feeds.live import build_live_feed, price_modes
from monitor.feeds.native import NativeFeed
from monitor.model import PriceTick
from tests.feed_helpers import Collector

REPO = Path(__file__).resolve().parents[1]


def feed(**keys) -> FeedSettings:
    return FeedSettings(**{"name": "f", "symbols": ["BTC/USDT"], **keys})


@pytest.mark.parametrize("keys, message", [
    ({"driver": "native", "exchange": "okx"}, "native driver speaks binance and bybit"),
    ({"driver": "ccxt", "price": "mark"}, "needs perpetual symbols"),
    ({"driver": "ccxt", "ws_url": "stream.binance.com"}, "not a base URL"),
    ({"driver": "websocket"}, "Input should be"),
])
def test_bad_feed_keys_are_rejected(keys: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        feed(**keys)


def test_unknown_exchange_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"feeds \(f\)\.exchange: 'nosuchvenue' is not a ccxt exchange"):
        build_live_feed(feed(driver="ccxt", exchange="nosuchvenue"))


@pytest.mark.parametrize("keys, message", [
    ({"driver": "ccxt", "exchange": "okx"},
     r"^feeds \(f\)\.price: ccxt gives no index price of okx for 'BTC/USDT' "
     r"\(index prices: binance, binanceusdm, bybit\)$"),
    ({"driver": "native", "symbols": ["BTC/USDT", "BTC/USDT:USDT"]},
     r"^feeds \(f\)\.symbols: 'BTC/USDT' and 'BTC/USDT:USDT' have the same index \(BTC/USDT:USDT\)"),
    ({"driver": "native", "symbols": ["BTC/USD:BTC"]},  # Binance's native feed speaks USDⓈ-M only
     r"^feeds \(f\)\.symbols: 'BTC/USD:BTC' is not a Binance spot"),
])
def test_an_index_the_driver_cannot_read_is_a_one_line_config_error(keys: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_live_feed(feed(price="index", **keys))


@pytest.mark.parametrize("driver, exchange", [("ccxt", "binance"), ("ccxt", "binanceusdm"), ("ccxt", "bybit"),
                                              ("native", "binance"), ("native", "bybit")])
def test_index_mode_builds_for_spot_and_perpetuals(driver: str, exchange: str) -> None:
    built = build_live_feed(feed(driver=driver, exchange=exchange, price="index",
                                 symbols=["BTC/USDT", "ETH/USDT:USDT"]))
    assert built.symbols == ("BTC/USDT", "ETH/USDT:USDT")  # ticks carry our symbols, whatever stream they come from


def test_price_defaults_to_mark_for_perpetuals() -> None:
    assert price_modes(feed(symbols=["BTC/USDT", "BTC/USDT:USDT"])) == {"BTC/USDT": "mid", "BTC/USDT:USDT": "mark"}
    assert price_modes(feed(symbols=["BTC/USDT"], price="last")) == {"BTC/USDT": "last"}


def test_drivers_are_built_from_settings() -> None:
    assert isinstance(build_live_feed(feed(driver="ccxt")), CcxtFeed)
    native = build_live_feed(feed(driver="native", client="websockets", testnet=True))
    assert isinstance(native, NativeFeed) and native.client == "websockets"
    assert native.endpoints[0].url == "wss://stream.testnet.binance.vision/stream"


def test_overrides_keep_the_venue_paths() -> None:
    urls = {"ws": {"spot": "wss://stream.binance.com:9443/ws"}, "public": "https://api.binance.com/api/v3",
            "x": 3}
    assert rebase_urls(urls, "ws://127.0.0.1:8765", "http://10.0.0.1:8080/relay") == {
        "ws": {"spot": "ws://127.0.0.1:8765/ws"}, "public": "http://10.0.0.1:8080/relay/api/v3", "x": 3}
    ex = make_exchange("binance", pro=True, testnet=True, ws_url="ws://127.0.0.1:1", rest_url=None,
                       types={"linear"}, feed="f")
    assert ex.urls["api"]["ws"]["linear"] == "ws://127.0.0.1:1/ws"  # the sandbox's paths, our host
    assert ex.options["fetchMarkets"]["types"] == ["linear"]


def test_example_config_watches_live_binance_and_offline_example_is_simulated() -> None:
    live = load_settings(REPO / "config.example.toml")
    assert live.feeds and live.feeds[0].driver in ("ccxt", "native") and live.feeds[0].exchange == "binance"
    assert live.execution.mode == "dry_run"
    offline = load_settings(REPO / "examples" / "offline.toml")
    assert {f.driver for f in offline.feeds} == {"simulated"}


# -- combining several sources ------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def combiner(rule: str, names=("a", "b", "c"), live_for_s: float = 10.0):
    out, clock = Collector(), Clock()
    c = build_combiner([(n, ("BTC/USDT", "ETH/USDT") if n == "a" else ("BTC/USDT",), live_for_s) for n in names],
                       rule, 0.05, out)
    c._clock = clock
    return c, out, clock


def tick(price: float, ts: int = 1000, symbol: str = "BTC/USDT") -> PriceTick:
    return PriceTick(symbol, price, ts, price - 1, price + 1)


def test_primary_rule_uses_fallback_only_while_primary_is_silent() -> None:
    c, out, clock = combiner("primary", names=("a", "b"))
    c.sink_for("a")(tick(100, 1000))
    c.sink_for("b")(tick(101, 1001))  # primary live: fallback not used
    assert [t.price for t in out.ticks] == [100]
    clock.t = 11.0  # primary silent longer than its stale_after_s
    c.sink_for("b")(tick(102, 990))
    assert [t.price for t in out.ticks] == [100, 102]
    assert out.ticks[-1].ts_ms == 1000  # never back in time, whatever the feeds' clocks say
    c.sink_for("a")(tick(103, 1100))  # primary back
    assert out.ticks[-1].price == 103
    c.sink_for("a")(tick(50, 1000, "ETH/USDT"))  # a symbol only one feed watches passes straight through
    assert out.ticks[-1].symbol == "ETH/USDT"


def test_median_rule_and_outlier_guard() -> None:
    c, out, clock = combiner("median")
    c.sink_for("a")(tick(100))
    c.sink_for("b")(tick(102))
    c.sink_for("c")(tick(104))
    assert out.ticks[-1].price == 102 and (out.ticks[-1].bid, out.ticks[-1].ask) == (101, 103)
    n = len(out.ticks)
    c.sink_for("c")(tick(60))  # 40% off the others: held, not published
    assert len(out.ticks) == n and c.suspect == 1
    c.sink_for("a")(tick(101))  # the suspect quote does not count in the median
    assert out.ticks[-1].price == 101.5
    c.sink_for("c")(tick(101))  # agrees again: trusted again
    assert out.ticks[-1].price == 101
    clock.t = 20.0  # the others went silent: the last live source is used alone
    c.sink_for("c")(tick(70))
    assert out.ticks[-1].price == 70


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0, random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    caps = [1, 2, 4, 8, 8, 8]
    assert all(0.5 <= d <= cap for d, cap in zip(delays, caps))
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not lock-step
    b.reset()
    assert b.next_delay() <= 1.0


def test_check_config_builds_live_feeds(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "venue.toml"
    bad.write_text((REPO / "config.example.toml").read_text().replace('exchange = "binance"', 'exchange = "nosuchvenue"'))
    proc = subprocess.run([sys.executable, "-m", "monitor", "check-config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "'nosuchvenue' is not a ccxt exchange" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "monitor", "check-config", str(REPO / "config.example.toml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "feed binance: ccxt binance, BTC/USDT, ETH/USDT, SOL/USDT" in ok.stdout
    index = tmp_path / "index.toml"
    index.write_text(bad.read_text().replace('exchange = "nosuchvenue"', 'exchange = "okx"')
                     .replace('price = "mid"', 'price = "index"'))
    proc = subprocess.run([sys.executable, "-m", "monitor", "check-config", str(index)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "feeds (binance).price: ccxt gives no index price of okx for 'BTC/USDT'" in proc.stderr
