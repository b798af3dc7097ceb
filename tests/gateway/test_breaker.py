"""The circuit breaker in process, on a clock the test moves: no sleeps."""

from __future__ import annotations

from gateway.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_opens_after_n_failures_and_fails_fast_until_reset() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, reset_s=5.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"  # two in a row: not yet
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 4.9
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half-open"


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, reset_s=5.0, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()  # the probe failed: open again, for a full reset_s from now
    assert breaker.state == "open"
    clock.now += 5
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow() and breaker.failures == 0


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(2, reset_s=5.0, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"  # not two in a row
