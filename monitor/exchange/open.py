"""The gateway for an account's venue."""

from __future__ import annotations

from monitor.config import AccountSettings
from monitor.exchange.binance import BinanceMarginGateway
from monitor.exchange.binance_usdm import BinanceUsdmGateway
from monitor.exchange.bybit import BybitGateway
from monitor.exchange.credentials import Credentials
from monitor.exchange.gateway import ExchangeGateway
from monitor.exchange.okx import OkxGateway

GATEWAYS: dict[str, type[ExchangeGateway]] = {"bybit": BybitGateway, "binance": BinanceMarginGateway,
                                              "binanceusdm": BinanceUsdmGateway, "okx": OkxGateway}


def open_gateway(acc: AccountSettings, creds: Credentials, timeout_s: float,
                 symbols: tuple[str, ...] = ()) -> ExchangeGateway:
    """No I/O: markets load on the first call."""
    return GATEWAYS[acc.source](acc, creds, timeout_s, symbols)
