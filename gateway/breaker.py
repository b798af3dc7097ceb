"""A circuit breaker per upstream: after N consecutive failures, fail fast until a probe succeeds.

closed --N failures--> open --reset_s elapsed--> half-open (one probe) --success--> closed
                                                                       --failure--> open
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class CircuitBreaker:
    failures_to_open: int
    reset_s: float
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    clock: Callable[[], float] = time.monotonic  # seconds; tests pass their own

    def _now(self) -> float:
        return self.clock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self._now() - self.opened_at >= self.reset_s:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time does."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.opened_at is not None or self.failures >= self.failures_to_open:
            self.opened_at = self._now()
