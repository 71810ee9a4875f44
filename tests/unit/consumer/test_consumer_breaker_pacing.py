"""Circuit breaker, backoff and rate limiter (pure, on a fake clock)."""

from __future__ import annotations

import pytest

from cryptovol_consumer.breaker import BreakerState, CircuitBreaker
from cryptovol_consumer.pacing import RateLimiter, backoff_delay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


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


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert backoff_delay(0, 0.2, 10.0, rand=lambda: 0.0) == pytest.approx(0.1)
    assert backoff_delay(0, 0.2, 10.0, rand=lambda: 1.0) == pytest.approx(0.2)
    assert backoff_delay(3, 0.2, 10.0, rand=lambda: 1.0) == pytest.approx(1.6)
    assert backoff_delay(10, 0.2, 10.0, rand=lambda: 1.0) == pytest.approx(10.0)
    assert backoff_delay(10_000, 0.2, 10.0, rand=lambda: 0.5) == pytest.approx(7.5)
    delays = {round(backoff_delay(4, 0.2, 10.0), 6) for _ in range(50)}
    assert len(delays) > 1 and all(1.6 <= d <= 3.2 for d in delays)


def test_rate_limiter_spaces_calls() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, burst=2, clock=clock, sleep=clock.sleep)
    start = clock.now
    waits = [limiter.acquire() for _ in range(12)]
    assert waits[:2] == [0.0, 0.0]  # the burst
    assert all(w == pytest.approx(0.1) for w in waits[2:])
    assert clock.now - start == pytest.approx(1.0)


def test_rate_limiter_disabled() -> None:
    clock = Clock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    assert all(limiter.acquire() == 0.0 for _ in range(1000))
    assert clock.now == 100.0
