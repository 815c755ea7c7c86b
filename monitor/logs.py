"""structlog set-up: JSON lines for services and pipes, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import orjson
import structlog

LogFormat = Literal["auto", "json", "console"]
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def strict_json(event: dict[str, Any], default: Any = None) -> str:
    """One line of strict JSON: orjson writes NaN and infinities (an unknown health, one without
    debt) as null, numpy values included, where the stdlib would write a bare NaN that strict
    parsers refuse. A value orjson cannot take (an int past 64 bits, nesting past 254) becomes
    its repr instead of losing the line."""
    try:
        return orjson.dumps(event, default=default, option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError
        safe = {k: _encodable(v, default) for k, v in event.items()}
        return orjson.dumps(safe, default=default, option=_OPTIONS).decode()


def _encodable(value: Any, default: Any) -> Any:
    try:
        orjson.dumps(value, default=default, option=_OPTIONS)
    except TypeError:
        return repr(value)
    return value


def configure_logging(fmt: LogFormat = "auto", level: str = "info") -> None:
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = (structlog.processors.JSONRenderer(serializer=strict_json) if json_out
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json_out else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
