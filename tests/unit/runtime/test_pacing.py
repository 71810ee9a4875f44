from __future__ import annotations

import asyncio
import random

import pytest

from cryptovol.runtime.pacing import Backoff, Pacer, RateLimiter


def test_full_jitter_stays_under_a_capped_exponential_ceiling() -> None:
    backoff = Backoff(0.5, 8.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceiling = backoff.ceiling()
        delay = backoff.delay()
        assert 0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_full_jitter_spreads_delays() -> None:
    backoff = Backoff(1.0, 30.0, rng=random.Random(2))
    delays = []
    for _ in range(200):
        backoff.attempt = 3
        delays.append(backoff.delay())
    assert min(delays) < 1.0 and max(delays) > 7.0


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(4.0, clock=lambda: now[0])
    assert [limiter.try_acquire() for _ in range(5)] == [True] * 4 + [False]
    assert limiter.wait_time() == 0.25
    now[0] += 0.25
    assert limiter.try_acquire() and not limiter.try_acquire()
    now[0] += 10  # tokens refill only up to the burst
    assert sum(limiter.try_acquire() for _ in range(10)) == 4


def test_a_rate_of_zero_means_no_limit() -> None:
    limiter = RateLimiter(0.0, clock=lambda: 0.0)
    assert all(limiter.try_acquire() for _ in range(1000))
    assert limiter.wait_time() == 0.0


def test_rate_limiter_acquire_waits() -> None:
    limiter = RateLimiter(50.0, burst=1)

    async def take(n: int) -> None:
        for _ in range(n):
            await limiter.acquire()

    asyncio.run(take(3))
    assert not limiter.try_acquire()


def test_pacer_follows_data_time_and_compresses_gaps() -> None:
    pacer = Pacer(10.0, max_gap_s=2.0)
    assert pacer.delay(1000.0, now=50.0) == 0.0
    assert pacer.delay(1001.0, now=50.0) == pytest.approx(0.1)
    assert pacer.delay(1003.0, now=50.0) == pytest.approx(0.3)
    # one hour of recording gap would be 360 s at 10x: shortened to 2 s
    assert pacer.delay(4603.0, now=50.3) == pytest.approx(2.0)
    assert pacer.delay(4604.0, now=52.3) == pytest.approx(0.1)
    assert pacer.delay(4000.0, now=52.4) < 0  # out-of-order data: no waiting
