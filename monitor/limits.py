"""What a number a user writes may be: finite, and within bounds they can mean.

Settings reuse these types instead of per-field copies, so a new field gets the same bounds
and the same one-line refusal. The bounds are far beyond any real use and keep every
product the engine forms (amount x price, durations in ms) finite in float64 and int64.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator, Field

YEAR_S = 365 * 86_400  # the longest duration a setting may hold: a year
MAX_AMOUNT = 1e15  # coin quantities and quote-unit notionals, either sign
PRICE_MIN, PRICE_MAX = 1e-15, 1e15  # a usable price; outside it ratios and products overflow
MAX_COUNT = 10**9  # queue sizes, caps, steps: bounded, never a runaway allocation
MAX_DEPTH = 32  # nesting of a config document (a real one is under 10 deep)


def _at_most(limit: float, what: str):
    def check(v: float) -> float:
        if v > limit:
            raise ValueError(f"must be at most {what}")
        return v
    return AfterValidator(check)


_A_YEAR_S = _at_most(YEAR_S, f"a year ({YEAR_S} s)")

# Durations, by the unit in the field's name. Zero is allowed where it means "off" or "at once".
Seconds = Annotated[float, Field(ge=0), _A_YEAR_S]
PositiveSeconds = Annotated[float, Field(gt=0), _A_YEAR_S]
PositiveWholeSeconds = Annotated[int, Field(gt=0), _A_YEAR_S]
PositiveMillis = Annotated[int, Field(gt=0), _at_most(YEAR_S * 1000, f"a year ({YEAR_S * 1000} ms)")]
Days = Annotated[float, Field(ge=0), _at_most(365, "a year (365 days)")]

# Fractions: weights, rates, tolerances, probabilities.
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveFraction = Annotated[float, Field(gt=0, le=1)]

# Money and quantities.
_AMOUNT_BOUND = _at_most(MAX_AMOUNT, "1e15")
Amount = Annotated[float, Field(ge=-MAX_AMOUNT), _AMOUNT_BOUND]  # signed: negative = borrowed, short
NonNegativeAmount = Annotated[float, Field(ge=0), _AMOUNT_BOUND]
PositiveAmount = Annotated[float, Field(gt=0), _AMOUNT_BOUND]
Price = Annotated[float, Field(ge=PRICE_MIN), _at_most(PRICE_MAX, "1e15")]
Ratio = Annotated[float, Field(gt=0), _at_most(1e6, "1e6")]  # health, margin levels and their targets

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
PositiveCount = Annotated[int, Field(gt=0, le=MAX_COUNT)]


def usable_price(p: float) -> bool:
    """A price the engine can divide by and multiply with (False for NaN)."""
    return PRICE_MIN <= p <= PRICE_MAX


def walk(data: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every leaf and container below `data`, depth-first, without recursion:
    a document nested thousands deep must not exhaust the stack."""
    stack = [(path, data)]
    while stack:
        here, value = stack.pop()
        yield here, value
        if isinstance(value, dict):
            stack.extend((here + (k,), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((here + (i,), v) for i, v in reversed(list(enumerate(value))))


def too_deep(data: Any) -> tuple | None:
    """The path of the first value nested deeper than MAX_DEPTH, else None."""
    return next((p for p, _ in walk(data) if len(p) > MAX_DEPTH), None)


def bad_number(data: Any) -> tuple | None:
    """The path of the first number in free-form data (strategy params) that is not finite
    and at most MAX_AMOUNT in size, else None."""
    for p, v in walk(data):
        if isinstance(v, int | float) and not isinstance(v, bool) and not abs(v) <= MAX_AMOUNT:
            return p
    return None
