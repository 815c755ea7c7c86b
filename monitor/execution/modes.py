"""Execution modes: dry_run (paper, the default), testnet (the venue's sandbox), live (real money).

Live needs two keys turned: `mode = "live"` in the config AND `--live` on the command
line; it then logs a banner no one can miss. Testnet refuses accounts that are not on
their venue's sandbox, and live refuses sandbox accounts, so a config never half-trades.
"""

from __future__ import annotations

import structlog

from monitor.config import Settings
from monitor.errors import ConfigError

log = structlog.get_logger("execution")

LIVE_BANNER = "LIVE TRADING: orders on this daemon's exchange accounts use REAL MONEY"


def check_mode(settings: Settings, live_flag: bool) -> None:
    mode = settings.execution.mode
    venues = [a for a in settings.accounts if a.source != "config"]
    if mode == "live" and not live_flag:
        raise ConfigError("execution.mode: 'live' also needs --live on the command line (real money)")
    if live_flag and mode != "live":
        raise ConfigError(f"--live: the config's execution.mode is {mode!r}, not 'live'")
    if mode == "dry_run":
        return
    if not venues:
        raise ConfigError(f"execution.mode: {mode!r} needs an account with source = an exchange "
                          "(config-held accounts only trade on paper: use 'dry_run')")
    for acc in venues:
        if mode == "testnet" and not acc.testnet:
            raise ConfigError(f"accounts ({acc.name}): execution.mode 'testnet' needs testnet = true")
        if mode == "live" and acc.testnet:
            raise ConfigError(f"accounts ({acc.name}): testnet = true in a live config; use mode 'testnet'")


def announce_mode(settings: Settings) -> None:
    if settings.execution.mode == "live":
        line = "!" * len(LIVE_BANNER)
        for text in (line, LIVE_BANNER, line):
            log.critical(text, mode="live", accounts=[a.name for a in settings.accounts if a.source != "config"])
