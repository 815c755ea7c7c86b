"""structlog set-up: JSON lines for services and pipes, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

from monitor.model import json_number

LogFormat = Literal["auto", "json", "console"]


def strict_json(_logger: Any, _method: str, event_dict: dict) -> dict:
    return json_number(event_dict)


def configure_logging(fmt: LogFormat = "auto", level: str = "info") -> None:
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = (structlog.processors.JSONRenderer() if json_out
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json_out else structlog.dev.set_exc_info,
            *([strict_json] if json_out else []),  # a health of NaN would make the line invalid JSON
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
