"""Durations as people type them: '90s', '30m', '2h', '1d', '1w'."""

from __future__ import annotations

import re

from monitor.errors import UserError
from monitor.limits import YEAR_S

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str, flag: str = "duration") -> int:
    """Milliseconds, at most a year (as every duration in the config); anything else, or zero,
    is a UserError naming `flag`."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"{flag}: not a duration like 30m, 2h or 1d: {text!r}")
    ms = float(m.group(1)) * _UNIT_MS[m.group(2)]  # a float: 400 digits become inf, never an int overflow
    if not ms <= YEAR_S * 1000:
        raise UserError(f"{flag}: {text!r} is longer than a year (365d)")
    return int(ms)
