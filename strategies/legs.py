"""The four kinds of legs planners combine, each with its exact breakpoints.

Prices: MarketView prices are in the account's valuation unit; an Order's
price is in its quote asset, so it is the valuation price divided by the
quote's price (1 for a USD stable valued in USD).
"""

from __future__ import annotations

from monitor.config import linear_perpetual
from monitor.model import Order, Repay
from strategies.base import Market
from strategies.sizing import Draft, Leg, balance_kinks, crossings, debt_levels, perp_levels, qty_levels


def spot_symbol(market: Market, quote: str) -> str:
    """The pair that trades the market's base against `quote` (the market's own if it quotes in it)."""
    return market.symbol if market.quote == quote else f"{market.base}/{quote}"


def perp_symbol(market: Market) -> str:
    """The linear perpetual on the market, in ccxt swap notation (BTC/USDT -> BTC/USDT:USDT)."""
    return linear_perpetual(market.symbol)


def sale_leg(draft: Draft, asset: str, receive: str, repay: bool) -> Leg | None:
    """Sell x of `asset` for `receive`; with `repay`, the proceeds repay `receive`'s debt."""
    mv, book = draft.market, draft.book
    market, e = mv.markets.get(asset), book.exposures.get(asset)
    p_recv = mv.prices.get(receive, 0.0)
    if market is None or e is None or e.qty <= 0 or p_recv <= 0 or asset == receive:
        return None
    price = mv.sell_price(asset) / p_recv
    rate = price * (1 - mv.fee_rate)  # receive units per unit sold, after the fee
    if rate <= 0:
        return None
    symbol = spot_symbol(market, receive)
    owed = book.exposures[receive].debt if repay and receive in book.exposures else 0.0
    held = book.exposures[receive].qty if receive in book.exposures else 0.0

    def build(x: float) -> tuple[list[Order], list[Repay]]:
        order = Order(symbol, "sell", x, price, asset, receive)
        amount = min(x * rate, owed)
        return [order], ([Repay(receive, amount)] if amount > 0 else [])

    # Kinks: the sold asset's tiers; the debt's maintenance tiers as it is repaid, and fully
    # repaid at x_k; the received asset's tiers on what stays after repaying (nothing stays before x_k).
    x_k = owed / rate
    points = crossings(e.qty, -1.0, qty_levels(book, asset, mv.prices[asset]))
    if owed > 0:
        points += [x_k, *crossings(owed, -rate, debt_levels(book, receive, p_recv)),
                   *crossings(held, rate, qty_levels(book, receive, p_recv), start=x_k)]
    else:
        points += balance_kinks(book, receive, p_recv, rate)
    return Leg(f"sell {asset} for {receive}", e.qty, tuple(points), build,
               market.lot_size, market.min_notional, price)


def buy_leg(draft: Draft, asset: str, pay: str) -> Leg | None:
    """Buy x of borrowed `asset` with held `pay` and repay it (x up to the debt and what `pay` covers)."""
    mv, book = draft.market, draft.book
    market, e, s = mv.markets.get(asset), book.exposures.get(asset), book.exposures.get(pay)
    p_pay = mv.prices.get(pay, 0.0)
    if market is None or e is None or e.debt <= 0 or s is None or s.qty <= 0 or p_pay <= 0:
        return None
    price = mv.buy_price(asset) / p_pay
    cost = price * (1 + mv.fee_rate)  # pay units per unit bought
    # A hair under what `pay` covers, so float noise never turns into a margin borrow.
    hi = min(e.debt, s.qty / cost * (1 - 1e-12))
    symbol = spot_symbol(market, pay)

    def build(x: float) -> tuple[list[Order], list[Repay]]:
        return [Order(symbol, "buy", x, price, asset, pay)], ([Repay(asset, x)] if x > 0 else [])

    points = crossings(s.qty, -cost, qty_levels(book, pay, p_pay))
    points += crossings(e.debt, -1.0, debt_levels(book, asset, mv.prices.get(asset, 0.0)))
    return Leg(f"buy {asset} with {pay}", hi, tuple(points), build, market.lot_size, market.min_notional, price)


def repay_leg(draft: Draft, asset: str) -> Leg | None:
    """Repay borrowed `asset` from the balance of it already held (no trade)."""
    e = draft.book.exposures.get(asset)
    price = draft.market.prices.get(asset, 0.0)
    if e is None or e.qty <= 0 or e.debt <= 0 or price <= 0:
        return None

    def build(y: float) -> tuple[list[Order], list[Repay]]:
        return [], ([Repay(asset, y)] if y > 0 else [])

    points = crossings(e.qty, -1.0, qty_levels(draft.book, asset, price))
    points += crossings(e.debt, -1.0, debt_levels(draft.book, asset, price))
    return Leg(f"repay {asset} from balance", min(e.qty, e.debt), tuple(points), build)


def perp_leg(draft: Draft, asset: str) -> Leg | None:
    """Close y of the perpetual on `asset` (sell to cut a long, buy to cut a short)."""
    mv, book = draft.market, draft.book
    market, e = mv.markets.get(asset), book.exposures.get(asset)
    if market is None or e is None or e.perp_size == 0 or asset not in mv.prices:
        return None
    settle = market.quote
    long = e.perp_size > 0
    # Perp entry prices and pnl are in the settle asset, which the book values at 1.
    price = mv.sell_price(asset) if long else mv.buy_price(asset)
    direction = 1.0 if long else -1.0
    # Per unit closed, the settle balance moves by the realized pnl minus the fee.
    k = direction * (price - e.perp_cost / e.perp_size) - mv.fee_rate * price
    p_s = mv.prices.get(settle, 0.0)

    def build(y: float) -> tuple[list[Order], list[Repay]]:
        return [Order(perp_symbol(market), "sell" if long else "buy", y, price, asset, settle)], []

    points = balance_kinks(book, settle, p_s, k)
    points += crossings(abs(e.perp_size), -1.0, perp_levels(book, asset, mv.prices[asset]))
    return Leg(f"cut {asset} perp", abs(e.perp_size), tuple(points), build,
               market.lot_size, market.min_notional, price)
