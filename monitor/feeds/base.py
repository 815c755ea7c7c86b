"""The PriceFeed interface: anything that produces PriceTicks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from monitor.config import linear_perpetual
from monitor.model import PriceTick

TickSink = Callable[[PriceTick], None]


class PriceFeed(Protocol):
    """A feed pushes ticks into `sink` (non-blocking) until cancelled.

    `run` returns only when the feed has nothing more to say (a finite source);
    a live feed runs until its task is cancelled. Errors propagate to the supervisor,
    which restarts the feed with backoff.
    """

    name: str
    symbols: tuple[str, ...]

    async def run(self, sink: TickSink) -> None: ...


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """A live feed's connection changed state: the engine hears of it (and logs it)."""

    feed: str
    kind: str  # "disconnected" | "connected" | "watchdog"
    detail: str = ""


FeedEventSink = Callable[[FeedEvent], None]


def price_source(symbol: str, mode: str) -> str:
    """The market whose stream carries `symbol`'s price in `mode` (ccxt notation).

    A spot symbol's index comes from its linear perpetual (BTC/USDT -> BTC/USDT:USDT): the
    perpetual's index is the venue's composite of spot prices, in the quote's terms, and it is
    what Binance's markPrice stream ("i") and Bybit's linear tickers ("indexPrice") carry.
    """
    return linear_perpetual(symbol) if mode == "index" else symbol
