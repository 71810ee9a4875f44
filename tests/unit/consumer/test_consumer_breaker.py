"""The circuit breaker (pure, on a fake clock); backoff and rate limiting are the
runtime's (tests/unit/runtime/test_pacing.py)."""

from __future__ import annotations

import pytest

from cryptovol_consumer.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_recovers() -> None:
    clock = Clock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(3, reset_timeout_s=5.0, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_success()  # resets the count
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(5.0)
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # one trial call
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure()  # the trial failed: open again at once
    assert breaker.state is BreakerState.OPEN
    clock.now += 5.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.retry_in() == 0.0
    assert changes == [
        BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN,
        BreakerState.HALF_OPEN, BreakerState.CLOSED,
    ]  # fmt: skip
