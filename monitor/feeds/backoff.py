"""Reconnect delays: exponential with full jitter, reset after a healthy connection."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.first_s, self.max_s = first_s, max(max_s, first_s)
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        """Uniform in [first/2, cap]: many clients never retry in lock-step after a venue outage."""
        cap = min(self.max_s, self.first_s * 2 ** self._attempt)
        self._attempt += 1
        return self._rng.uniform(min(self.first_s / 2, cap), cap)

    def reset(self) -> None:
        self._attempt = 0
