"""Log lines: JSON ones are strict (no NaN/Infinity) whatever a caller passes."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import structlog

from monitor.logs import configure_logging
from tests.test_cli import strict_json


def test_json_log_lines_are_strict_and_never_lost() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        configure_logging("json")
        log = structlog.get_logger()
        log.info("values", nan=float("nan"), inf=np.float64("inf"), arr=np.array([np.nan, 1.5]),
                 big=10**30, obj=object(), keys={1: -float("inf")})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", health=float("nan"))
    first, second = (strict_json(line) for line in err.getvalue().splitlines())
    assert (first["nan"], first["inf"], first["arr"], first["keys"]) == (None, None, [None, 1.5], {"1": None})
    assert first["big"] == str(10**30) and first["obj"].startswith("<object object")
    assert second["health"] is None and "ValueError: boom" in second["exception"]
