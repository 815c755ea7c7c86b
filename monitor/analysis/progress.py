"""A progress bar on a terminal, silence anywhere else (logs, pipes, CI)."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """Redraws one line in place; `update(done, total)` as often as is convenient."""

    WIDTH = 30

    def __init__(self, label: str, unit: str, stream: TextIO):
        self.label, self.unit, self.stream = label, unit, stream
        self.drawn = False

    def update(self, done: int, total: int) -> None:
        filled = int(self.WIDTH * done / max(total, 1))
        self.stream.write(f"\r  {self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} {self.unit}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def progress_bar(label: str, unit: str, stream: TextIO | None = None) -> ProgressBar | None:
    """A bar when `stream` (stderr by default) is a terminal, else None: no output at all."""
    stream = stream if stream is not None else sys.stderr
    return ProgressBar(label, unit, stream) if stream.isatty() else None
