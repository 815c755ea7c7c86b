"""The seeded simulated market and its PriceFeed."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from monitor.errors import ConfigError
from monitor.feeds.base import PriceFeed
from monitor.feeds.simulated import MarketSpec, SimulatedFeed, SimulatedMarket
from monitor.model import PriceTick

START = {"BTC/USDT": 60_000.0, "ETH/USDT": 3_000.0}
WAIT_S = 5.0  # upper bound for awaiting results; the tests finish far sooner


def run_market(spec: MarketSpec, steps: int, start_ms: int = 0) -> list[list[PriceTick]]:
    market = SimulatedMarket(spec, start_ms=start_ms)
    return [market.step() for _ in range(steps)]


def price_path(spec: MarketSpec, symbol: str, steps: int) -> np.ndarray:
    return np.array([t.price for step in run_market(spec, steps) for t in step if t.symbol == symbol])


def test_same_seed_same_sequence() -> None:
    spec = MarketSpec(start=START, fixed={"USDC/USDT": 1.0})
    assert run_market(spec, 500) == run_market(MarketSpec(start=dict(START), fixed={"USDC/USDT": 1.0}), 500)


def test_different_seeds_differ() -> None:
    a = price_path(MarketSpec(start=START, seed=1), "BTC/USDT", 50)
    b = price_path(MarketSpec(start=START, seed=2), "BTC/USDT", 50)
    assert a[0] == b[0] == START["BTC/USDT"]
    assert not np.array_equal(a, b)


def test_step_shape_times_and_spread() -> None:
    spec = MarketSpec(start=START, step_ms=250, fixed={"USDC/USDT": 1.0})
    steps = run_market(spec, 5, start_ms=1_000)
    for k, ticks in enumerate(steps):
        assert [t.symbol for t in ticks] == ["BTC/USDT", "ETH/USDT", "USDC/USDT"]
        assert {t.ts_ms for t in ticks} == {1_000 + 250 * k}
        for t in ticks:
            assert t.bid == pytest.approx(t.price * 0.9999) and t.ask == pytest.approx(t.price * 1.0001)
    assert {t.symbol: t.price for t in steps[0]} == {**START, "USDC/USDT": 1.0}


@pytest.mark.parametrize("seed", [7, 0, 1, 2, 3])
def test_crash_drawdown(seed: int) -> None:
    spec = MarketSpec(start=START, seed=seed)
    at, length = spec.crash_at_step, spec.crash_steps
    assert at is not None
    for symbol in START:
        path = price_path(spec, symbol, at + length + 100)
        peak = path[: at + 1].max()
        trough_at = int(np.argmin(path[at:])) + at
        assert 1 - path[trough_at] / peak >= spec.crash_depth * 0.8
        assert at < trough_at <= at + length + 20  # the bottom is the crash, not noise


def test_recovery_after_crash() -> None:
    spec = MarketSpec(start=START, jump_prob=0.0)
    assert spec.crash_at_step is not None
    end_crash = spec.crash_at_step + spec.crash_steps
    path = price_path(spec, "BTC/USDT", end_crash + spec.recover_steps + 1)
    bounce = path[-1] / path[end_crash - 1]
    # half the drop back: (1 - d/2) / (1 - d), give or take the noise
    assert bounce == pytest.approx((1 - spec.crash_depth / 2) / (1 - spec.crash_depth), rel=0.1)


def test_crash_at_step_zero_starts_with_the_first_move() -> None:
    spec = MarketSpec(start=START, crash_at_step=0, crash_steps=10, recover_steps=0, vol_per_step=0.0, jump_prob=0.0)
    path = price_path(spec, "BTC/USDT", 12)
    assert path[0] == START["BTC/USDT"]
    assert path[10] == pytest.approx(START["BTC/USDT"] * (1 - spec.crash_depth))
    assert path[11] == pytest.approx(path[10])


def test_no_crash_when_disabled() -> None:
    spec = MarketSpec(start=START, crash_at_step=None, jump_prob=0.0)
    path = price_path(spec, "BTC/USDT", 600)
    assert path.min() / path.max() > 0.8


@pytest.mark.parametrize("seed", [7, 11, 42])
def test_leveraged_account_walks_down_the_levels(seed: int) -> None:
    # 1 BTC + 20 ETH against USDT debt, health 1.35 at the start (thresholds folded in)
    steps = run_market(MarketSpec(start=START, seed=seed), 400)
    value = np.array([sum(t.price * {"BTC/USDT": 1, "ETH/USDT": 20}[t.symbol] for t in step) for step in steps])
    health = 1.35 * value / value[0]
    crossed = [int(np.argmax(health < level)) for level in (1.3, 1.15, 1.02)]
    assert all(health[k] < level for k, level in zip(crossed, (1.3, 1.15, 1.02)))
    assert crossed == sorted(crossed)


def test_fixed_symbols_stay_constant() -> None:
    spec = MarketSpec(start=START, fixed={"USDC/USDT": 1.0, "DAI/USDT": 0.9995}, jump_prob=0.5)
    steps = run_market(spec, 400)
    usdc = {t.price for s in steps for t in s if t.symbol == "USDC/USDT"}
    dai = {t.price for s in steps for t in s if t.symbol == "DAI/USDT"}
    assert usdc == {1.0} and dai == {0.9995}
    assert all(len(s) == 4 for s in steps)


def test_only_fixed_symbols() -> None:
    steps = run_market(MarketSpec(start={}, fixed={"USDC/USDT": 1.0}), 3)
    assert [[t.price for t in s] for s in steps] == [[1.0], [1.0], [1.0]]


@pytest.mark.parametrize(
    "changes",
    [
        {"start": {}},
        {"start": {"BTC/USDT": 0.0}},
        {"start": {"BTC/USDT": float("nan")}},
        {"fixed": {"BTC/USDT": 1.0}},
        {"step_ms": 0},
        {"vol_per_step": -0.1},
        {"jump_prob": 1.5},
        {"crash_at_step": -1},
        {"crash_depth": 1.0},
        {"crash_steps": 0},
        {"correlation": 1.1},
    ],
)
def test_invalid_spec(changes: dict) -> None:
    with pytest.raises(ConfigError, match="simulated market"):
        MarketSpec(**{"start": START, **changes})


# ---------------------------------------------------------------- the feed


async def test_feed_pushes_exactly_max_steps() -> None:
    spec = MarketSpec(start=START, fixed={"USDC/USDT": 1.0})
    feed = SimulatedFeed("sim", spec, interval_s=0, max_steps=50)
    assert feed.name == "sim"
    assert feed.symbols == ("BTC/USDT", "ETH/USDT", "USDC/USDT")
    ticks: list[PriceTick] = []
    await asyncio.wait_for(feed.run(ticks.append), WAIT_S)
    assert len(ticks) == 50 * 3
    ts = [t.ts_ms for t in ticks]
    assert ts == sorted(ts)
    # the feed replays the market's path, only restamped
    expected = [t.price for step in run_market(spec, 50) for t in step]
    assert [t.price for t in ticks] == expected
    # a finished feed has nothing more to say
    await asyncio.wait_for(feed.run(ticks.append), WAIT_S)
    assert len(ticks) == 150


async def test_feed_stamps_with_clock_and_never_goes_back() -> None:
    clock = iter([5_000, 6_000, 5_500, 7_000])  # the wall clock steps back once
    feed = SimulatedFeed("sim", MarketSpec(start=START), interval_s=0, max_steps=4, clock_ms=lambda: next(clock))
    ticks: list[PriceTick] = []
    await asyncio.wait_for(feed.run(ticks.append), WAIT_S)
    assert [t.ts_ms for t in ticks] == [5_000, 5_000, 6_000, 6_000, 6_000, 6_000, 7_000, 7_000]


async def test_feed_with_interval_finishes() -> None:
    feed = SimulatedFeed("sim", MarketSpec(start=START), interval_s=0.001, max_steps=3)
    ticks: list[PriceTick] = []
    await asyncio.wait_for(feed.run(ticks.append), WAIT_S)
    assert len(ticks) == 6


async def test_running_feed_can_be_cancelled() -> None:
    counter = itertools.count(1)
    feed = SimulatedFeed("sim", MarketSpec(start=START), interval_s=0, clock_ms=lambda: next(counter))
    ticks: list[PriceTick] = []
    enough = asyncio.Event()

    def sink(tick: PriceTick) -> None:
        ticks.append(tick)
        if len(ticks) >= 100:
            enough.set()

    task = asyncio.create_task(feed.run(sink))
    await asyncio.wait_for(enough.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    assert task.cancelled()
    assert len(ticks) % 2 == 0  # a step's ticks are pushed together, never half a step


async def test_paced_feed_can_be_cancelled_while_sleeping() -> None:
    feed = SimulatedFeed("sim", MarketSpec(start=START), interval_s=60)
    first = asyncio.Event()
    task = asyncio.create_task(feed.run(lambda tick: first.set()))
    await asyncio.wait_for(first.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    assert feed.steps_taken == 1


def test_feed_satisfies_protocol() -> None:
    feed: PriceFeed = SimulatedFeed("sim", MarketSpec(start=START))
    assert feed.symbols == ("BTC/USDT", "ETH/USDT")


def test_feed_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        SimulatedFeed("sim", MarketSpec(start=START), interval_s=-1)
    with pytest.raises(ConfigError):
        SimulatedFeed("sim", MarketSpec(start=START), max_steps=-1)
