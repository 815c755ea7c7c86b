"""The one place ccxt is imported: an exchange account behind a small typed interface.

Third-party exceptions are translated here (VenueRejected: the venue said no, a human
must look; VenueUnavailable: transient, retry), and every message is scrubbed of the
account's credentials before it leaves. The rest of the daemon never sees a ccxt dict.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
import ccxt.pro as ccxtpro
import orjson

from monitor.config import AccountSettings
from monitor.exchange.credentials import Credentials
from monitor.exchange.venues import TOP_UP_INTO, VenueState
from monitor.model import Transfer

FINAL = ("closed", "canceled", "rejected", "expired")
LOOKUP_TRIES = 5  # an order placed a moment ago may take a moment to show in the venue's lists


class VenueError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class VenueRejected(VenueError):
    """The venue (or its published limits) refused: insufficient balance, min notional, rate limit..."""


class VenueNotFound(VenueRejected):
    """The venue has no such order."""


class VenueUnavailable(VenueError):
    """No answer (timeout, connection, 5xx): the outcome of a write is unknown until looked up."""


@dataclass(frozen=True, slots=True)
class VenueOrder:
    client_id: str
    symbol: str
    side: str
    amount: float
    filled: float
    average: float | None
    fee: float  # in quote units
    status: str  # open | closed | canceled | rejected | expired

    @property
    def final(self) -> bool:
        return self.status in FINAL


def override_urls(urls: Any, rest: str | None, ws: str | None) -> Any:
    """Every API base URL of a ccxt exchange re-rooted on `rest` (http) or `ws` (websocket),
    keeping the venue's paths; a base not given leaves those URLs as they are."""
    if isinstance(urls, dict):
        return {k: override_urls(v, rest, ws) for k, v in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        base = ws if urls.startswith(("ws://", "wss://")) else rest
        return base.rstrip("/") + urlsplit(urls).path if base else urls
    return urls


def build_exchange(acc: AccountSettings, creds: Credentials, timeout_s: float, options: dict[str, Any]) -> Any:
    """A configured ccxt client (no I/O here: markets load on first use)."""
    cls = getattr(ccxtpro, acc.source)  # ccxt.pro: REST as ccxt, plus the private streams
    exchange = cls({"apiKey": creds.api_key, "secret": creds.secret, "password": creds.password,
                    "enableRateLimit": True, "timeout": int(timeout_s * 1000), "options": options})
    if acc.testnet:
        exchange.set_sandbox_mode(True)
    if acc.rest_url or acc.ws_url:
        exchange.urls["api"] = override_urls(exchange.urls["api"], acc.rest_url, acc.ws_url)
    return exchange


def venue_reason(err: Exception, creds: Credentials) -> str:
    """The venue's own words (retMsg / msg; OKX: the failed item's sMsg) when the error carries
    its JSON, else ccxt's message."""
    text = str(err)
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            body = orjson.loads(match.group(0))
            items = body.get("data")
            item = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
            if item.get("sMsg"):  # OKX: "All operations failed" outside, the reason per item
                body = {"msg": item["sMsg"], "code": item.get("sCode")}
            msg = body.get("retMsg") or body.get("msg")
            code = body.get("retCode", body.get("code"))
            if msg:
                text = f"{msg} (code {code})" if code is not None else str(msg)
        except (orjson.JSONDecodeError, AttributeError):
            pass
    return creds.redact(f"{type(err).__name__}: {text}")[:300]


class ExchangeGateway:
    """What every venue shares: ccxt calls with translated errors, rounding, idempotent orders
    by client id, lookups. A venue's module (bybit.py, binance.py) says how its account and
    order lists are read."""

    ccxt_options: dict[str, Any] = {}
    nets_coins = False  # the venue nets each coin's balance and liability (no repay call needed)
    order_params: dict[str, Any] = {}  # added to every order, lookup and cancel
    # The venue's private streams the daemon applies: topic -> ccxt.pro watch method. Each
    # update goes to _on_update(topic, ...), and watch_state answers with _streamed_state().
    streams: dict[str, str] = {}
    resync_wanted = False  # a stream update only a REST sync can complete (e.g. a new position's rates)

    def __init__(self, acc: AccountSettings, creds: Credentials, timeout_s: float, symbols: tuple[str, ...] = (),
                 exchange: Any | None = None):
        self.account = acc.name
        self.venue = acc.source
        self.symbols = symbols  # the markets the account trades (venues that list orders per market)
        self.reserve_wallet = acc.reserve_wallet  # where top-ups come from (ccxt's wallet name)
        self._creds = creds
        self._x = exchange if exchange is not None else build_exchange(acc, creds, timeout_s, self.ccxt_options)
        self._markets_loaded = False
        self._next: dict[str, asyncio.Future | None] = {}  # each stream's pending watch

    @property
    def has_stream(self) -> bool:
        return bool(self.streams)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            if not self._markets_loaded:
                await self._x.load_markets()
                self._markets_loaded = True
            return await getattr(self._x, method)(*args, **kwargs)
        except ccxt.OrderNotFound as err:
            raise VenueNotFound(venue_reason(err, self._creds)) from None
        except ccxt.RateLimitExceeded as err:  # a NetworkError in ccxt's tree, but the venue said no
            raise VenueRejected(venue_reason(err, self._creds)) from None
        except (ccxt.NetworkError, asyncio.TimeoutError) as err:
            raise VenueUnavailable(venue_reason(err, self._creds)) from None
        except ccxt.BaseError as err:
            raise VenueRejected(venue_reason(err, self._creds)) from None

    # -- the account (per venue) ------------------------------------------------------------
    async def fetch_state(self, now_ms: int) -> VenueState:
        raise NotImplementedError

    async def watch_state(self, now_ms: Callable[[], int]) -> VenueState:
        """The account after the next update of any of the venue's private streams. Each watch
        stays pending across calls, so an update on one stream never drops another's."""
        if not self.streams:
            raise VenueRejected(f"{self.venue}: no private balance stream is supported")
        for topic, method in self.streams.items():
            if self._next.get(topic) is None:
                self._next[topic] = asyncio.ensure_future(self._call(method))
        done, _ = await asyncio.wait(self._next.values(), return_when=asyncio.FIRST_COMPLETED)
        try:
            for topic, task in list(self._next.items()):
                if task in done:
                    self._next[topic] = None
                    self._on_update(topic, task.result())  # a broken stream raises here: the caller reconnects
        except VenueError:
            await self._drop_streams()
            raise
        return self._streamed_state(now_ms())

    async def _drop_streams(self) -> None:
        """After a break: the other watches go with it (one break, one failure) and the
        connections close, so the next watch dials and logs in again. ccxt never repeats a
        login that failed on a connection the venue left open: that stream would hang."""
        await self._cancel_watches()
        await self._x.close_ws_clients()

    async def _cancel_watches(self) -> None:
        pending = [task for task in self._next.values() if task is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # their errors are the break or the close
        self._next = {}

    def _on_update(self, topic: str, update: Any) -> None:
        """Folds one stream update (what the ccxt.pro watch method returned) into the account."""
        raise NotImplementedError

    def _streamed_state(self, now_ms: int) -> VenueState:
        """The account as the last REST sync and the stream updates since make it."""
        raise NotImplementedError

    async def _lookup(self, client_id: str, symbol: str) -> list[dict[str, Any]]:
        """Raw ccxt orders that may carry `client_id` (open or recently closed)."""
        raise NotImplementedError

    async def _recent(self) -> list[dict[str, Any]]:
        """Raw ccxt orders open or recent on the account's markets."""
        raise NotImplementedError

    # -- top-ups from the reserve wallet (venues in TOP_UP_INTO) -------------------------------
    async def fetch_reserve(self) -> dict[str, float]:
        """What the account's reserve_wallet could move in now (asset -> amount)."""
        raise VenueRejected(f"{self.venue}: top-ups from a wallet are not supported")

    def _transfer_params(self, transfer_id: str) -> dict[str, Any]:
        """The venue's field for a caller-chosen transfer id (what makes a retry safe)."""
        raise VenueRejected(f"{self.venue}: top-ups from a wallet are not supported")

    async def top_up(self, transfer_id: str, asset: str, amount: float) -> Transfer:
        """Moves `amount` of `asset` from the reserve wallet into the account; returns what moved.

        Safe to call again with the same id: after a timeout the transfer is looked up by its
        id before anything is resent, and a venue that has the id already refuses a second one."""
        into = TOP_UP_INTO.get(self.venue)
        if into is None or not self.reserve_wallet:
            raise VenueRejected(f"{self.venue}: no reserve_wallet to top up from")
        try:
            await self._call("transfer", asset, amount, self.reserve_wallet, into, self._transfer_params(transfer_id))
        except VenueUnavailable:
            moved = await self.find_transfer(transfer_id, asset)
            if moved is None:
                raise
            return moved
        except VenueRejected:
            moved = await self.find_transfer(transfer_id, asset, tries=1)  # "transfer id exists": done already
            if moved is None:
                raise
            return moved
        return Transfer(asset, amount)

    async def find_transfer(self, transfer_id: str, asset: str | None = None,
                            tries: int = LOOKUP_TRIES) -> Transfer | None:
        """The completed transfer with this id, or None if the venue has none."""
        for attempt in range(tries):
            for t in await self._call("fetch_transfers", asset, None, None, self._transfer_params(transfer_id)):
                # Bybit may list a self-transfer's id with a prefix ("selfTransfer_<uuid>").
                if str(t.get("id") or "").endswith(transfer_id) and t.get("status") == "ok":
                    return Transfer(str(t.get("currency") or asset), float(t.get("amount") or 0.0))
            if attempt + 1 < tries:
                await asyncio.sleep(0.05 * 2 ** attempt)
        return None

    async def repay(self, asset: str, amount: float) -> None:
        """Margin repay from the account's own balance of `asset` (nothing to do where the venue nets coins)."""
        if not self.nets_coins:
            await self._call("repay_cross_margin", asset, amount)

    # -- orders -----------------------------------------------------------------------------
    async def rounded(self, symbol: str, amount: float, price: float) -> tuple[float, float]:
        """Amount and price on the market's grid; an order under the market's minimums is refused here."""
        if not self._markets_loaded:
            await self._call("load_markets")
        try:
            market = self._x.market(symbol)
            qty = float(self._x.amount_to_precision(symbol, amount))
            px = float(self._x.price_to_precision(symbol, price))
        except ccxt.BaseError as err:
            raise VenueRejected(venue_reason(err, self._creds)) from None
        limits = market.get("limits") or {}
        min_qty = (limits.get("amount") or {}).get("min") or 0.0
        min_cost = (limits.get("cost") or {}).get("min") or 0.0
        if qty <= 0 or qty < min_qty or qty * px < min_cost:
            raise VenueRejected(f"below the market's minimum: {qty:g} {symbol} at {px:g} "
                                f"(min amount {min_qty:g}, min notional {min_cost:g})")
        return qty, px

    async def place(self, client_id: str, symbol: str, side: str, amount: float, price: float) -> VenueOrder:
        """A marketable limit order (immediate-or-cancel) at `price`, the slippage cap.

        Safe to call again with the same client id: on a timeout the order is looked up by
        its client id before anything is resent, and a venue that already has the id refuses
        a second order with it."""
        params: dict[str, Any] = {"timeInForce": "IOC", "clientOrderId": client_id, **self.order_params}
        if ":" in symbol:  # a perpetual: the planner only ever cuts positions
            params["reduceOnly"] = True
        try:
            await self._call("create_order", symbol, "limit", side, amount, price, params)
        except VenueUnavailable:
            found = await self.find(client_id, symbol)
            if found is None:
                raise
            return await self._settled(found)
        except VenueRejected:
            found = await self.find(client_id, symbol, tries=1)  # "duplicate client id": it exists already
            if found is None:
                raise
        order = await self.find(client_id, symbol)
        if order is None:
            raise VenueUnavailable(f"order {client_id} accepted but not found on {self.venue}")
        return await self._settled(order)

    async def _settled(self, order: VenueOrder) -> VenueOrder:
        """An IOC order ends at once; one still open is cancelled (its remainder is re-planned, not left resting)."""
        if not order.final:
            await self.cancel(order)
            order = await self.find(order.client_id, order.symbol) or order
        return order

    async def find(self, client_id: str, symbol: str, tries: int = LOOKUP_TRIES) -> VenueOrder | None:
        for attempt in range(tries):
            try:
                for raw in await self._lookup(client_id, symbol):
                    if raw.get("clientOrderId") == client_id:
                        return self._order(raw)
            except VenueNotFound:
                pass
            if attempt + 1 < tries:
                await asyncio.sleep(0.05 * 2 ** attempt)
        return None

    async def orders_with_prefix(self, prefix: str) -> list[VenueOrder]:
        """Open and recent orders whose client id starts with `prefix` (reconciliation)."""
        out: dict[str, VenueOrder] = {}
        for raw in await self._recent():
            cid = raw.get("clientOrderId") or ""
            if cid.startswith(prefix):
                out[cid] = self._order(raw)
        return [out[k] for k in sorted(out)]

    async def accounted_orders(self, prefix: str) -> list[VenueOrder]:
        """Orders with the client-id prefix, none left resting: a resting remainder would fill
        on stale terms, so it is cancelled (the account is planned again instead)."""
        orders = await self.orders_with_prefix(prefix)
        out = []
        for o in orders:
            if not o.final:
                await self.cancel(o)
                o = await self.find(o.client_id, o.symbol) or o
            out.append(o)
        return out

    async def cancel(self, order: VenueOrder) -> None:
        await self._call("cancel_order", None, order.symbol, {"clientOrderId": order.client_id, **self.order_params})

    def _order(self, raw: dict[str, Any]) -> VenueOrder:
        filled = float(raw.get("filled") or 0.0)
        average = raw.get("average")
        fee = raw.get("fee") or {}
        cost = float(fee.get("cost") or 0.0)
        base = raw["symbol"].split("/")[0]
        if fee.get("currency") == base and average:
            cost *= float(average)  # a buy pays its fee in the base coin: value it in quote units
        elif fee.get("cost") is None and filled and average:
            # Binance reports no commission with an order: an IOC order pays the market's taker rate.
            market = (self._x.markets or {}).get(raw["symbol"]) or {}
            cost = filled * float(average) * float(market.get("taker") or 0.0)
        return VenueOrder(raw.get("clientOrderId") or "", raw["symbol"], raw["side"], float(raw.get("amount") or 0.0),
                          filled, float(average) if average else None, cost, raw.get("status") or "open")

    async def close(self) -> None:
        await self._cancel_watches()
        await self._x.close()


def merge_positions(positions: list[dict[str, Any]], updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ccxt positions after a stream update, which carries only what changed (a closed
    position comes with size 0)."""
    by_symbol = {p["symbol"]: p for p in positions}
    for p in updates:
        by_symbol[p["symbol"]] = p
    return [p for p in by_symbol.values() if p.get("contracts")]
