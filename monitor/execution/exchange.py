"""Testnet and live execution: plans become marketable limit orders on the account's venue.

- Client order ids derive from the plan id (`client_order_id`), so a retry after a
  timeout finds the order it placed instead of placing a second one, and a restart
  finds a crashed plan's orders by prefix (monitor/execution/reconcile.py).
- Before anything is sent the plan is re-checked on the latest prices: a plan that no
  longer raises health is not sent.
- Amounts and prices are rounded to the market's grid; each order is a limit at the
  slippage cap, immediate-or-cancel: never a bare market order.
- A partial fill is reported as it is; the remainder is never resent blindly (the
  account is planned again on fresh prices). A rejection carries the venue's reason.

Accounts without a venue (holdings from config) fall through to the paper executor.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from monitor.exchange.gateway import ExchangeGateway, VenueError, VenueOrder, VenueUnavailable
from monitor.execution.base import Execution, Executor
from monitor.model import Fill, Order, Plan, Repay, Transfer
from monitor.store.base import PlanRecord

log = structlog.get_logger("execution")
TRANSFER_NAMESPACE = uuid.UUID("5b0c3f52-8f1e-4c57-9d4e-0c6f3a1b2d7e")  # fixed: ids must not change between runs

Recheck = Callable[[Plan], str | None]  # why the plan no longer helps on the latest prices, or None
LimitPrice = Callable[[Order], float]  # the slippage-capped limit price of an order, in quote units
PARTIAL_TOLERANCE = 1e-9


def client_prefix(plan_id: str) -> str:
    """Every order of a plan starts with this. Letters and digits only, at most 32 characters
    with the leg (OKX's limit; Bybit and Binance allow 36 and a few symbols)."""
    return f"cm{plan_id[:24]}n"


def client_order_id(plan_id: str, leg: int) -> str:
    return f"{client_prefix(plan_id)}{leg}"


def order_leg(client_id: str, prefix: str) -> int:
    return int(client_id[len(prefix):] or 0)


@dataclass(frozen=True, slots=True)
class Unknown:
    """Where a plan's unknown outcome starts: its first order leg and first top-up leg not yet
    accounted for (a crash leaves all of them unknown)."""
    order: int = 0
    transfer: int = 0


def transfer_id(plan_id: str, leg: int) -> str:
    """A top-up's id, derived from the plan like an order's: a UUID, as Bybit requires."""
    return str(uuid.uuid5(TRANSFER_NAMESPACE, f"{plan_id}/{leg}"))


class ExchangeExecutor:
    name = "exchange"

    def __init__(self, gateways: dict[str, ExchangeGateway], clock_ms: Callable[[], int]):
        self.gateways = gateways
        self._clock_ms = clock_ms
        self._fallback: Executor | None = None
        self._recheck: Recheck = lambda plan: "no market view bound yet"
        self._limit_price: LimitPrice = lambda order: order.price
        self.reconciled: set[str] = set()  # accounts whose earlier orders are accounted for
        # account -> plan id -> the first legs whose outcome at the venue is unknown (those before
        # were journaled with the plan's execution; reconciling must not count them twice)
        self.unresolved: dict[str, dict[str, Unknown]] = {}

    def bind(self, fallback: Executor, recheck: Recheck, limit_price: LimitPrice) -> None:
        """The market view the orders are priced and re-checked on (again after a config reload:
        the venue state, reconciled accounts and unresolved orders stay)."""
        self._fallback, self._recheck, self._limit_price = fallback, recheck, limit_price

    async def execute(self, plan: Plan) -> Execution:
        gw = self.gateways.get(plan.account)
        if gw is None:
            assert self._fallback is not None, "bind() before execute()"
            return await self._fallback.execute(plan)
        if plan.account not in self.reconciled:
            return Execution(plan.plan_id, errors=("not sent: the venue's orders are not reconciled yet "
                                                   "(it has been unreachable)",))
        problem = self._recheck(plan)
        if problem is not None:
            log.warning("plan not sent", account=plan.account, plan_id=plan.plan_id, reason=problem)
            return Execution(plan.plan_id, errors=(f"not sent: {problem}",))
        transfers, errors = await self._top_ups(gw, plan)
        fills: list[Fill] = []
        if not errors:
            fills, errors = await self._orders(gw, plan)
        repays: list[Repay] = []
        if not errors:
            for r in plan.repays:
                try:
                    await gw.repay(r.asset, r.amount)
                except VenueError as err:
                    errors.append(f"repay {r.amount:g} {r.asset}: rejected by {gw.venue}: {err.reason}")
                    break
                repays.append(r)
        return Execution(plan.plan_id, tuple(fills), tuple(repays), errors=tuple(errors), transfers=tuple(transfers))

    async def reconcile(self, record: PlanRecord) -> Execution | None:
        """What a plan a crash left open did at its venue (JournaledExecutor.reconcile calls this
        at start). An unreachable venue is asked again by the account's sync loop."""
        gw = self.gateways.get(record.account)
        if gw is None:
            return None
        try:
            return await self.venue_outcome(gw, record.plan_id)
        except VenueError as err:
            self._mark_unknown(record.account, record.plan_id, Unknown())
            log.warning("reconcile deferred: venue unreachable", account=record.account, plan_id=record.plan_id,
                        error=err.reason)
            return None

    async def venue_outcome(self, gw: ExchangeGateway, plan_id: str, unknown: Unknown = Unknown()) -> Execution:
        """What the venue has of a plan's legs from `unknown` on: top-ups by their ids (legs go in
        order, so the first one missing ends the search) and orders by client-id prefix, none
        left resting."""
        transfers: list[Transfer] = []
        leg = unknown.transfer
        while gw.reserve_wallet and (t := await gw.find_transfer(transfer_id(plan_id, leg), tries=1)) is not None:
            transfers.append(t)
            leg += 1
        prefix = client_prefix(plan_id)
        orders = [o for o in await gw.accounted_orders(prefix) if order_leg(o.client_id, prefix) >= unknown.order]
        return Execution(plan_id, fills_of(orders, self._clock_ms()), transfers=tuple(transfers))

    def _mark_unknown(self, account: str, plan_id: str, unknown: Unknown) -> None:
        """The account trades again only once this is reconciled (after the next reconnect)."""
        self.unresolved.setdefault(account, {})[plan_id] = unknown
        self.reconciled.discard(account)

    async def _top_ups(self, gw: ExchangeGateway, plan: Plan) -> tuple[list[Transfer], list[str]]:
        done: list[Transfer] = []
        for leg, t in enumerate(plan.transfers):
            try:
                moved = await gw.top_up(transfer_id(plan.plan_id, leg), t.asset, t.amount)
            except VenueError as err:
                return done, [self._failed(plan, gw, f"top up {t.amount:g} {t.asset}", err, Unknown(0, leg))]
            log.info("top-up done", account=plan.account, asset=moved.asset, amount=moved.amount,
                     wallet=gw.reserve_wallet)
            done.append(moved)
        return done, []

    def _failed(self, plan: Plan, gw: ExchangeGateway, what: str, err: VenueError, unknown: Unknown) -> str:
        """The error line for a leg; an unanswered request may have reached the venue."""
        if not isinstance(err, VenueUnavailable):
            return f"{what}: rejected by {gw.venue}: {err.reason}"
        self._mark_unknown(plan.account, plan.plan_id, unknown)
        return f"{what}: {gw.venue} unreachable, outcome unknown until reconciled: {err.reason}"

    async def _orders(self, gw: ExchangeGateway, plan: Plan) -> tuple[list[Fill], list[str]]:
        fills: list[Fill] = []
        for leg, order in enumerate(plan.orders):
            cid = client_order_id(plan.plan_id, leg)
            try:
                amount, price = await gw.rounded(order.symbol, order.amount, self._limit_price(order))
                placed = await gw.place(cid, order.symbol, order.side, amount, price)
            except VenueError as err:
                unknown = Unknown(leg, len(plan.transfers))
                return fills, [self._failed(plan, gw, f"{order.side} {order.symbol}", err, unknown)]
            log.info("order done", account=plan.account, client_id=cid, symbol=order.symbol, side=order.side,
                     amount=amount, limit=price, filled=placed.filled, average=placed.average, status=placed.status)
            if placed.filled > 0:
                sent = replace(order, amount=amount, price=price)
                fills.append(Fill(sent, placed.filled, placed.average or price, placed.fee, self._clock_ms()))
            if placed.filled < amount * (1 - PARTIAL_TOLERANCE):
                # Later legs assumed this one filled: stop here; the account is planned again.
                return fills, [f"{order.side} {order.symbol}: partial fill {placed.filled:g} of {amount:g} "
                               f"(limit {price:g}, {placed.status}); the remainder is re-planned on fresh prices"]
        return fills, []


def fills_of(orders: list[VenueOrder], ts_ms: int) -> tuple[Fill, ...]:
    """Fills as the venue reports them for orders found by client id."""
    out = []
    for o in orders:
        if o.filled > 0:
            base, quote = o.symbol.split(":")[0].split("/", 1)
            price = o.average or 0.0
            out.append(Fill(Order(o.symbol, o.side, o.amount, price, base, quote), o.filled, price, o.fee, ts_ms))
    return tuple(out)
