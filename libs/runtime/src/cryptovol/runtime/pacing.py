"""Pacing: exponential backoff with full jitter for retries, a token bucket for rate
limits, and the pacer of replays (data time at a multiple of wall time)."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable

YIELD_EVERY = 200  # ticks between yields to the event loop when a replay runs at full speed


class Backoff:
    """``delay()`` is uniform in [0, min(cap, base * 2**attempt)] ("full jitter"), so
    many clients that lose the exchange at once do not come back in lockstep."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        return min(self.cap_s, self.base_s * 2 ** min(self.attempt, 60))

    def delay(self) -> float:
        """The next wait; each call counts one more failed attempt."""
        value = self._rng.uniform(0, self.ceiling())
        self.attempt += 1
        return value

    def reset(self) -> None:
        self.attempt = 0


class RateLimiter:
    """Token bucket: at most ``rate`` operations a second on average, ``burst`` at
    once; ``rate <= 0`` means no limit. ``acquire`` waits on the event loop; other
    callers ``try_acquire`` and wait ``wait_time()`` their own way (a stream
    worker waits with its partitions paused)."""

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def try_acquire(self) -> bool:
        if self.rate <= 0:
            return True
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self) -> None:
        while not self.try_acquire():
            await asyncio.sleep(self.wait_time())


class Pacer:
    """Sleeps so that data time advances ``speed`` times faster than wall time; a pause
    longer than ``max_gap_s`` (wall) is shortened to it. ``speed=inf`` never sleeps."""

    def __init__(self, speed: float, max_gap_s: float) -> None:
        self.speed = speed
        self.max_gap_s = max_gap_s
        self._anchor: tuple[float, float] | None = None  # (data seconds, wall monotonic)
        self._prev = 0.0
        self._count = 0

    def delay(self, data_time: float, now: float) -> float:
        if self._anchor is None:
            self._anchor = (data_time, now)
            self._prev = data_time
            return 0.0
        step = (data_time - self._prev) / self.speed
        if step > self.max_gap_s:  # compress a recording gap
            data0, wall0 = self._anchor
            self._anchor = (data0, wall0 - (step - self.max_gap_s))
        self._prev = max(self._prev, data_time)
        data0, wall0 = self._anchor
        return wall0 + (data_time - data0) / self.speed - now

    async def wait(self, data_time: float) -> None:
        if math.isinf(self.speed):
            self._count += 1
            if self._count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            return
        delay = self.delay(data_time, time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)
