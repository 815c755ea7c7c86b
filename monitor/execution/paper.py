"""Dry-run execution: fills on a paper ledger at bid/ask with fee and slippage; repays and
top-ups done as planned.

A sale fills at bid*(1 - slippage), a buy at ask*(1 + slippage) (price -/+
slippage when the feed gives no bid/ask), the fee is fee_rate of the notional.
Idempotency and the journal are not the executor's job: monitor/execution/journaled.py
wraps every executor with them.
"""

from __future__ import annotations

from collections.abc import Callable

from monitor.execution.base import Execution
from monitor.model import Fill, Order, Plan

QuoteSource = Callable[[str], tuple[float, float] | None]  # base asset -> (bid, ask)


class PaperExecutor:
    name = "paper"

    def __init__(self, quotes: QuoteSource, fee_rate: float, slippage: float, clock_ms: Callable[[], int]):
        self._quotes = quotes
        self.fee_rate = fee_rate
        self.slippage = slippage
        self._clock_ms = clock_ms

    def fill_price(self, order: Order) -> float:
        """In quote units, as the order is: base and quote are both valued in the valuation
        unit, so a BTC/USDC fill during a USDC depeg is BTC's price divided by USDC's."""
        base, quote = self._quotes(order.base), self._quotes(order.quote)
        if base is None or quote is None:
            return order.price  # no market data beyond the plan's own price
        bid, ask = base
        quote_mid = (quote[0] + quote[1]) / 2
        return (bid * (1 - self.slippage) if order.side == "sell" else ask * (1 + self.slippage)) / quote_mid

    def execute_now(self, plan: Plan) -> Execution:
        """Synchronous core (replay calls it directly; the daemon through `execute`)."""
        ts = self._clock_ms()
        fills = []
        for order in plan.orders:
            price = self.fill_price(order)
            fills.append(Fill(order, order.amount, price, order.amount * price * self.fee_rate, ts))
        return Execution(plan.plan_id, tuple(fills), plan.repays, transfers=plan.transfers)

    async def execute(self, plan: Plan) -> Execution:
        return self.execute_now(plan)

