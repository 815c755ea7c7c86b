"""A seeded simulated market: the offline demo feed.

Prices follow a correlated random walk in log space with occasional jumps, and a
scheduled crash followed by a partial recovery, so a demo account visibly walks
down through the alert levels. Same spec (and seed) -> identical sequence.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from monitor.errors import ConfigError
from monitor.feeds.base import TickSink
from monitor.model import PriceTick, wall_clock_ms

HALF_SPREAD = 0.0001  # bid/ask = price * (1 -/+ HALF_SPREAD)


@dataclass(frozen=True)
class MarketSpec:
    """Parameters of a simulated market; invalid values raise ConfigError."""

    start: dict[str, float]  # symbol -> start price (moving symbols)
    seed: int = 7
    step_ms: int = 1000  # event time between steps
    vol_per_step: float = 0.002  # stdev of the log return per step
    jump_prob: float = 0.01
    jump_scale: float = 0.03  # stdev of the jump's log size
    crash_at_step: int | None = 300  # first step that falls (0 behaves like 1)
    crash_depth: float = 0.35  # total fractional drop
    crash_steps: int = 60  # the drop is spread over this many steps
    recover_steps: int = 300  # then half the drop comes back over this many steps
    correlation: float = 0.7  # pairwise correlation of the moving symbols' shocks
    fixed: dict[str, float] = field(default_factory=dict)  # constant prices that still tick

    def __post_init__(self) -> None:
        problems = _spec_problems(self)
        if problems:
            raise ConfigError(f"simulated market: {'; '.join(problems)}")


def _spec_problems(spec: MarketSpec) -> list[str]:
    problems = [
        f"{symbol} price must be a positive number, got {price!r}"
        for symbol, price in (*spec.start.items(), *spec.fixed.items())
        if not (isinstance(price, int | float) and 0 < price < math.inf)
    ]
    both = sorted(set(spec.start) & set(spec.fixed))
    checks = [
        (bool(spec.start or spec.fixed), "no symbols"),
        (not both, f"symbols both moving and fixed: {', '.join(both)}"),
        (spec.step_ms > 0, "step_ms must be > 0"),
        (0 <= spec.vol_per_step < math.inf, "vol_per_step must be >= 0"),
        (0 <= spec.jump_prob <= 1, "jump_prob must be in [0, 1]"),
        (0 <= spec.jump_scale < math.inf, "jump_scale must be >= 0"),
        (spec.crash_at_step is None or spec.crash_at_step >= 0, "crash_at_step must be >= 0"),
        (0 <= spec.crash_depth < 1, "crash_depth must be in [0, 1)"),
        (spec.crash_steps >= 1, "crash_steps must be >= 1"),
        (spec.recover_steps >= 0, "recover_steps must be >= 0"),
        (0 <= spec.correlation <= 1, "correlation must be in [0, 1]"),
    ]
    return problems + [message for ok, message in checks if not ok]


class SimulatedMarket:
    """Deterministic price generator: each `step()` gives one tick per symbol.

    Step 0 emits the start prices; every later step applies one return. Event time
    is `start_ms + step * step_ms`.
    """

    def __init__(self, spec: MarketSpec, start_ms: int = 0) -> None:
        self.spec = spec
        self.symbols: tuple[str, ...] = (*spec.start, *spec.fixed)
        self._start_ms = start_ms
        self._rng = np.random.default_rng(spec.seed)
        self._start = np.array(list(spec.start.values()), dtype=np.float64)
        self._log_return_sum = np.zeros(len(self._start))  # from the start, so step 0 is exact
        self._fixed = np.array(list(spec.fixed.values()), dtype=np.float64)
        self._steps = 0
        self._common = math.sqrt(spec.correlation)
        self._own = math.sqrt(1.0 - spec.correlation)

    @property
    def steps_taken(self) -> int:
        return self._steps

    def prices(self) -> dict[str, float]:
        """The prices of the last step (the start prices before the first step)."""
        values = np.concatenate((self._start * np.exp(self._log_return_sum), self._fixed)).tolist()
        return dict(zip(self.symbols, values))

    def step(self) -> list[PriceTick]:
        if self._steps > 0:
            self._log_return_sum += self._log_return(self._steps)
        ts = self._start_ms + self._steps * self.spec.step_ms
        self._steps += 1
        return [
            PriceTick(symbol, price, ts, bid=price * (1 - HALF_SPREAD), ask=price * (1 + HALF_SPREAD))
            for symbol, price in self.prices().items()
        ]

    def _log_return(self, k: int) -> np.ndarray:
        spec = self.spec
        n = len(self._start)
        # draw the same amount every step, so the sequence never depends on outcomes
        shock = self._rng.standard_normal(n + 1)
        jump_draw = self._rng.random()
        jump = self._rng.standard_normal(n + 1)
        ret = spec.vol_per_step * self._correlated(shock)
        if jump_draw < spec.jump_prob:
            ret += spec.jump_scale * self._correlated(jump)
        return ret + self._scheduled_drift(k)

    def _correlated(self, z: np.ndarray) -> np.ndarray:
        # z[0] is the market factor, z[1:] the symbols' own shocks; unit variance each
        return self._common * z[0] + self._own * z[1:]

    def _scheduled_drift(self, k: int) -> float:
        spec = self.spec
        if spec.crash_at_step is None:
            return 0.0
        # step 0 only shows the start prices, so a crash "at 0" begins with step 1
        since = k - max(spec.crash_at_step, 1)
        if 0 <= since < spec.crash_steps:
            return math.log(1.0 - spec.crash_depth) / spec.crash_steps
        since -= spec.crash_steps
        if 0 <= since < spec.recover_steps:
            recovered = (1.0 - spec.crash_depth / 2) / (1.0 - spec.crash_depth)
            return math.log(recovered) / spec.recover_steps
        return 0.0


class SimulatedFeed:
    """A PriceFeed over a SimulatedMarket, paced in wall time and stamped with wall-clock ms.

    The market lives as long as the feed, so a restarted `run` continues the same
    path; `max_steps` counts steps over the feed's whole life.
    """

    def __init__(
        self,
        name: str,
        spec: MarketSpec,
        interval_s: float = 0.2,
        max_steps: int | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if not 0 <= interval_s < math.inf:
            raise ConfigError(f"feed {name}: interval_s must be >= 0, got {interval_s!r}")
        if max_steps is not None and max_steps < 0:
            raise ConfigError(f"feed {name}: max_steps must be >= 0, got {max_steps!r}")
        self.name = name
        self._market = SimulatedMarket(spec)
        self.symbols: tuple[str, ...] = self._market.symbols
        self._interval_s = interval_s
        self._max_steps = max_steps
        self._clock_ms = clock_ms or wall_clock_ms
        self._last_ts: int | None = None

    @property
    def steps_taken(self) -> int:
        return self._market.steps_taken

    async def run(self, sink: TickSink) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while not self._done():
            self._emit(sink)
            if self._done():
                return
            deadline = await self._pace(loop, deadline)

    def _done(self) -> bool:
        return self._max_steps is not None and self._market.steps_taken >= self._max_steps

    def _emit(self, sink: TickSink) -> None:
        ts = self._clock_ms()
        # a wall clock can step back (NTP); consumers expect time not to run backwards
        if self._last_ts is not None and ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        for tick in self._market.step():
            sink(replace(tick, ts_ms=ts))

    async def _pace(self, loop: asyncio.AbstractEventLoop, deadline: float) -> float:
        if self._interval_s == 0:
            await asyncio.sleep(0)  # still yield, or we would starve the loop
            return deadline
        deadline += self._interval_s
        now = loop.time()
        if deadline < now:
            deadline = now  # fell behind (slow sink, suspended host): do not burst to catch up
        await asyncio.sleep(deadline - now)
        return deadline
