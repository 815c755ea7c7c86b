"""Named stress scenarios: each asset's worst drawdown in a real crash window.

The figures were measured on the market data the tests use (tests/test_scenarios.py
re-derives every one of them from those files with `worst_drawdown`), so a scenario is
what that crash really did, peak to trough within its window, not a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.config import Settings
from monitor.errors import UserError


@dataclass(frozen=True)
class Scenario:
    name: str
    start: str  # the window measured, ISO-8601 UTC
    end: str
    drawdowns: dict[str, float]  # coin -> worst peak-to-trough move in the window (-0.1681 is -16.81%)
    source: str


SCENARIOS = (
    Scenario("2020-03-12", "2020-03-12T00:00Z", "2020-03-13T00:00Z", {"ETH": -0.4831},
             "COVID crash: ETH/USD 10-minute bars"),
    Scenario("2021-04-18", "2021-04-17T12:00Z", "2021-04-19T00:00Z",
             {"BTC": -0.1681, "ETH": -0.1958, "BNB": -0.1930, "SOL": -0.2112, "XRP": -0.2968, "DOGE": -0.2845,
              "ADA": -0.2397, "LUNA": -0.2620},
             "liquidation dump: Binance 1-minute candles against USDT"),
    Scenario("2021-05-19", "2021-05-19T00:00Z", "2021-05-20T00:00Z", {"ETH": -0.4589},
             "China ban sell-off: ETH/USD 10-minute bars"),
    Scenario("2023-03-11 USDC", "2023-03-10T00:00Z", "2023-03-14T00:00Z", {"USDC": -0.1274, "BTC": -0.0444},
             "USDC depeg after SVB: USDC/USD implied by Binance.US BTCUSD / BTCUSDC, BTC against USDT"),
    Scenario("2025-10-10 USDe", "2025-10-10T00:00Z", "2025-10-12T00:00Z", {"USDE": -0.3503},
             "USDe depeg on Binance: USDe/USDT 1-minute candles"),
)


def worst_drawdown(prices: np.ndarray) -> float:
    """The largest fall from a running peak to a later trough, as a fraction (<= 0)."""
    if not len(prices):
        return 0.0
    return float((prices / np.maximum.accumulate(prices) - 1.0).min())


def find_scenario(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name.lower() == name.strip().lower():
            return s
    raise UserError(f"--scenario {name!r}: unknown scenario (known: {', '.join(repr(s.name) for s in SCENARIOS)})")


def scenario_shocks(scenario: Scenario, settings: Settings) -> dict[str, float]:
    """The scenario's moves for the config's assets, matched by asset name or by the base of its
    price symbol (an asset "XBT" priced by "BTC/USDT" takes BTC's move)."""
    moves = {coin.upper(): move for coin, move in scenario.drawdowns.items()}
    out = {}
    for name, spec in settings.assets.items():
        base = spec.symbol.split("/")[0].split(":")[0] if spec.symbol else name
        move = moves.get(name.upper(), moves.get(base.upper()))
        if move is not None:
            out[name] = move
    return out


def scenario_note(scenario: Scenario, settings: Settings, overrides: dict[str, float]) -> str:
    """Where the moves come from, and which held volatile assets the crash's data does not cover."""
    from monitor.analysis.shocks import needed_symbols

    moved = set(scenario_shocks(scenario, settings)) | set(overrides)
    held = needed_symbols(settings)
    unmoved = sorted(n for n, a in settings.assets.items()
                     if a.symbol in held and n not in moved and not settings.is_stable(n))
    note = f"worst drawdown of each asset from {scenario.start} to {scenario.end} ({scenario.source})"
    return note + (f"; not in this crash's data, left unmoved: {', '.join(unmoved)}" if unmoved else "")
