"""What every exchange account must do, whatever the venue: one suite run against each fake
venue (Bybit, Binance cross margin, Binance USDⓈ-M futures, OKX), with ccxt unmodified.

Each venue module (tests/test_exchange_<venue>.py) provides its fake, the test keys it
expects (ENV), its config (settings_for) and a gateway; the venue-specific cases live there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import pytest

from monitor.execution.exchange import client_order_id
from monitor.model import EventKind
from tests import test_exchange_binance, test_exchange_binance_usdm, test_exchange_bybit, test_exchange_okx
from tests.loopback import venue_on_loopback
from tests.test_exchange_bybit import Running, until


@dataclass(frozen=True)
class Venue:
    module: ModuleType
    symbol: str  # what the timeout case sells
    amount: float
    held: Callable[[object], float]  # the fake's quantity that sale moves
    breach: float  # a price that makes the account's level act
    target: float  # the health that level restores
    book: str = "BTCUSDT"  # the fake's order book key
    rejects: tuple[tuple[object, str], ...] = field(default=())  # (the venue's code, its message)
    coded: bool = True  # the reason shows the venue's code (ccxt keeps only Binance's message)


VENUES = {
    "bybit": Venue(test_exchange_bybit, "BTC/USDT", 0.1, lambda f: f.wallet["BTC"], 34000, 2.5,
                   rejects=((170131, "Insufficient balance."), (10006, "Too many visits!"),
                            (170140, "Order value exceeded lower limit."))),
    "binance": Venue(test_exchange_binance, "BTC/USDT", 0.1, lambda f: f.free["BTC"], 36000, 1.5 / 1.1,
                     rejects=((-2010, "Account has insufficient balance for requested action."),), coded=False),
    "binanceusdm": Venue(test_exchange_binance_usdm, "BTC/USDT:USDT", 0.5, lambda f: f.positions["BTCUSDT"][0],
                         36500, 2.5, rejects=((-2022, "ReduceOnly Order is rejected."),)),
    "okx": Venue(test_exchange_okx, "BTC/USDT", 0.1, lambda f: f.cash["BTC"], 34000, 2.5, book="BTC-USDT",
                 rejects=(("51008", "Order failed. Insufficient BTC balance in account."),)),
}
REJECTS = [(name, reject) for name, v in VENUES.items() for reject in v.rejects]


@pytest.fixture(params=sorted(VENUES))
async def venue(request, monkeypatch):
    spec = VENUES[request.param]
    async with venue_on_loopback(spec.module.make_fake(), spec.module.ENV, monkeypatch) as (fake, url):
        yield spec, fake, url


@pytest.fixture(params=REJECTS, ids=[f"{n}-{r[0]}" for n, r in REJECTS])
async def rejecting(request, monkeypatch):
    name, reject = request.param
    spec = VENUES[name]
    async with venue_on_loopback(spec.module.make_fake(), spec.module.ENV, monkeypatch) as (fake, url):
        yield spec, fake, url, reject


async def test_a_timeout_after_the_order_reached_the_venue_leaves_exactly_one_order(venue) -> None:
    spec, fake, url = venue
    gw = spec.module.gateway(url, timeout_s=0.3)
    fake.delay_create_s = 1.0  # booked at once, answered after the client gave up
    before = spec.held(fake)
    try:
        cid = client_order_id("a" * 24, 0)
        order = await gw.place(cid, spec.symbol, "sell", spec.amount, 30000.0)
        again = await gw.place(cid, spec.symbol, "sell", spec.amount, 30000.0)  # a retry of the same leg: found
        assert order.client_id == again.client_id == cid
        assert order.filled == again.filled == pytest.approx(spec.amount)
        assert list(fake.orders) == [cid] and spec.held(fake) == pytest.approx(before - spec.amount)
    finally:
        await gw.close()


async def test_a_rejection_is_an_alert_with_the_venues_own_reason(rejecting) -> None:
    spec, fake, url, (code, message) = rejecting
    async with Running(spec.module.settings_for(url)) as r:
        r.feed.push(fake, 40000, spec.book)
        await until(lambda: r.health() > 1)
        fake.reject = (code, message)
        r.feed.push(fake, spec.breach, spec.book)
        alert = await r.notifier.wait_for(lambda e: e.kind == EventKind.REJECTED)
        assert (f"{message} (code {code})" if spec.coded else message) in alert.detail
        assert "All operations failed" not in alert.detail  # OKX's envelope, not the reason
        assert fake.orders == {}
        for secret in spec.module.ENV.values():
            assert secret not in alert.detail


async def test_a_wrong_secret_is_refused_by_the_venue_and_never_logged(venue, monkeypatch, capsys) -> None:
    spec, fake, url = venue
    secret_env = spec.module.settings_for(url).accounts[0].api_secret_env
    monkeypatch.setenv(secret_env, "not-the-secret-9999")
    r = Running(spec.module.settings_for(url))
    await r.until_sync_fails()
    assert fake.bad_signatures >= 1 and r.handle.syncs == 0
    out = capsys.readouterr()
    assert "account sync failed" in out.out + out.err
    for secret in ("not-the-secret-9999", *spec.module.ENV.values()):
        assert secret not in out.out + out.err


async def test_the_dry_run_reads_the_venue_and_trades_on_paper(venue) -> None:
    spec, fake, url = venue
    async with Running(spec.module.settings_for(url, mode="dry_run")) as r:
        r.feed.push(fake, 40000, spec.book)
        await until(lambda: r.health() > 1)
        before = spec.held(fake)
        r.feed.push(fake, spec.breach, spec.book)
        await asyncio.wait_for(r.d.settled.wait(), 10)
        after = r.health()
        await r.resync()  # the venue's balances again, the paper trades on top
        assert fake.orders == {} and spec.held(fake) == before
        assert after == pytest.approx(spec.target, rel=0.05)  # the paper trade restored the level's target
        assert r.health() == pytest.approx(after)
