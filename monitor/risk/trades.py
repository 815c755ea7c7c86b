"""Applying trades to an AccountBook: pure functions, no I/O.

Planners use them to compute the exact health a plan leads to, and the paper
executor uses the same functions to move a dry-run account, so "expected" and
"paper" can never disagree on the arithmetic.

Conventions:
- An Order's `price` and a fill's `fee` are in quote units; the quote asset's
  balance moves by amount*price -/+ fee.
- A balance that would go negative (a buy costing more quote than is held, a
  realized perp loss bigger than the settle balance) becomes debt: that is a
  margin borrow on the venue. Holding and owing the same asset at once is kept
  gross, and repaying is an explicit Repay, except on unified accounts, which net
  each coin as the venue does: a credit there pays the coin's liability first.
- A perpetual order is recognized by its symbol in ccxt's swap notation,
  "BASE/QUOTE:SETTLE" (e.g. "BTC/USDT:USDT"); it can only reduce a position.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from monitor.model import Fill, Order, Repay, Transfer
from monitor.risk.portfolio import IDENTITY, AccountBook, Exposure
from monitor.risk.tiers import Tiers

# Float noise an executor's amounts may carry (amount == held computed two ways).
_REL_TOL = 1e-12


def is_perp_symbol(symbol: str) -> bool:
    """ccxt swap notation "BASE/QUOTE:SETTLE" marks a perpetual; "BASE/QUOTE" is spot."""
    return ":" in symbol


def settle_of(symbol: str) -> str:
    return symbol.rsplit(":", 1)[1]


def _put(book: AccountBook, asset: str, exposure: Exposure,
         schedules: dict[str, Tiers] | None) -> AccountBook:
    """book with `asset` set to `exposure`; a newly seen asset gets its schedule (IDENTITY by default)."""
    new = book.with_exposure(asset, exposure)
    if asset not in book.weights:
        schedule = (schedules or {}).get(asset, IDENTITY)
        new = replace(new, weights={**book.weights, asset: schedule})
    return new


def adjust_balance(book: AccountBook, asset: str, delta: float,
                   schedules: dict[str, Tiers] | None = None) -> AccountBook:
    """Add `delta` (signed) to an asset's balance; what a debit cannot take from qty becomes debt.
    A unified account nets each coin (Bybit UTA): a credit pays that coin's liability first."""
    e = book.exposures.get(asset, Exposure())
    if delta >= 0:
        pay = min(e.debt, delta) if book.unified else 0.0
        return _put(book, asset, replace(e, qty=e.qty + delta - pay, debt=e.debt - pay), schedules)
    take = min(e.qty, -delta)
    return _put(book, asset, replace(e, qty=e.qty - take, debt=e.debt + (-delta - take)), schedules)


def apply_order(book: AccountBook, order: Order, fill_price: float, fee: float,
                schedules: dict[str, Tiers] | None = None) -> AccountBook:
    """The book after `order` filled completely at `fill_price` with `fee` (quote units)."""
    if order.amount < 0 or fill_price < 0 or fee < 0:
        raise ValueError(f"order {order.symbol}: amount, price and fee must be >= 0")
    if is_perp_symbol(order.symbol):
        settle = settle_of(order.symbol)
        if settle != order.quote:
            raise ValueError(f"order {order.symbol}: inverse perpetuals (settled in {settle}) are not supported")
        delta = -order.amount if order.side == "sell" else order.amount
        return reduce_perp(book, order.base, delta, fill_price, fee, settle, schedules)
    if order.side == "sell":
        e = book.exposures.get(order.base, Exposure())
        if order.amount > e.qty * (1 + _REL_TOL):
            raise ValueError(f"order {order.symbol}: sells {order.amount:g} {order.base} but holds {e.qty:g}")
        book = _put(book, order.base, replace(e, qty=max(e.qty - order.amount, 0.0)), schedules)
        return adjust_balance(book, order.quote, order.amount * fill_price - fee, schedules)
    book = adjust_balance(book, order.quote, -(order.amount * fill_price + fee), schedules)
    return adjust_balance(book, order.base, order.amount, schedules)


def apply_repay(book: AccountBook, repay: Repay) -> AccountBook:
    """Repay from the account's own balance: min(amount, qty, debt) leaves both qty and debt."""
    e = book.exposures.get(repay.asset)
    if e is None:
        return book
    x = max(0.0, min(repay.amount, e.qty, e.debt))
    if x == 0:
        return book
    return book.with_exposure(repay.asset, replace(e, qty=e.qty - x, debt=e.debt - x))


def apply_transfer(book: AccountBook, transfer: Transfer,
                   schedules: dict[str, Tiers] | None = None) -> AccountBook:
    """A top-up: `amount` leaves the reserve (never below zero) and is credited to the account
    (on a unified account it pays that coin's liability first, as the venue nets it)."""
    if transfer.amount < 0:
        raise ValueError(f"transfer of {transfer.asset}: the amount must be >= 0")
    book = adjust_balance(book, transfer.asset, transfer.amount, schedules)
    if transfer.asset not in book.reserve:
        return book
    left = max(book.reserve[transfer.asset] - transfer.amount, 0.0)
    return replace(book, reserve={**book.reserve, transfer.asset: left})


def reduce_perp(book: AccountBook, asset: str, size_delta: float, price: float, fee: float,
                settle_asset: str, schedules: dict[str, Tiers] | None = None) -> AccountBook:
    """Close part of the perpetual position on `asset` at `price`.

    `size_delta` has the opposite sign of the position and |size_delta| <= |size|.
    The closed fraction f = -size_delta/size takes f of the cost and of the
    maintenance margin with it; realized pnl = closed size * (price - average
    entry) = -size_delta * (price - cost/size). pnl - fee settles into
    `settle_asset` (a loss beyond its balance becomes debt). Prices, cost and
    fee are in settle units, which the book values at 1, so equity moves only
    by the fee (the unrealized pnl at `price` becomes realized).
    """
    e = book.exposures.get(asset)
    size = e.perp_size if e is not None else 0.0
    if size_delta == 0:
        return adjust_balance(book, settle_asset, -fee, schedules) if fee else book
    if size == 0 or size * size_delta > 0 or abs(size_delta) > abs(size) * (1 + _REL_TOL):
        raise ValueError(f"perp {asset}: a change of {size_delta:g} does not reduce a position of {size:g}")
    f = min(1.0, -size_delta / size)
    pnl = -size_delta * (price - e.perp_cost / size)
    if f >= 1.0 - _REL_TOL:
        closed = replace(e, perp_size=0.0, perp_cost=0.0, perp_mm=0.0)
    else:
        closed = replace(e, perp_size=size + size_delta, perp_cost=e.perp_cost * (1 - f), perp_mm=e.perp_mm * (1 - f))
    book = book.with_exposure(asset, closed)
    return adjust_balance(book, settle_asset, pnl - fee, schedules)


def apply_plan(book: AccountBook, orders: Sequence[Order], repays: Sequence[Repay], fee_rate: float,
               schedules: dict[str, Tiers] | None = None,
               transfers: Sequence[Transfer] = ()) -> AccountBook:
    """Orders filled at their own price (fee = fee_rate * notional): what the planners expect."""
    fills = [Fill(o, o.amount, o.price, fee_rate * o.notional, 0) for o in orders]
    return apply_execution(book, fills, repays, transfers, schedules)


def apply_execution(book: AccountBook, fills: Iterable[Fill], repays: Iterable[Repay] = (),
                    transfers: Iterable[Transfer] = (),
                    schedules: dict[str, Tiers] | None = None) -> AccountBook:
    """What an executor did, in the order it does it: top-ups first, then the fills, then the repays."""
    for transfer in transfers:
        book = apply_transfer(book, transfer, schedules)
    book = apply_fills(book, fills, schedules)
    for repay in repays:
        book = apply_repay(book, repay)
    return book


def apply_fills(book: AccountBook, fills: Iterable[Fill],
                schedules: dict[str, Tiers] | None = None) -> AccountBook:
    """The book after a sequence of fills (a partial fill moves only its filled amount)."""
    for fill in fills:
        order = fill.order if fill.amount == fill.order.amount else replace(fill.order, amount=fill.amount)
        book = apply_order(book, order, fill.price, fill.fee, schedules)
    return book
