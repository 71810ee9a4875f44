"""Reconnect pacing: exponential backoff with full jitter, and a token bucket that keeps
connects plus subscribes under the exchange's rate limit."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable


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
    """Token bucket: at most ``rate`` operations a second on average, ``burst`` at once."""

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
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def try_acquire(self) -> bool:
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self) -> None:
        while not self.try_acquire():
            await asyncio.sleep(self.wait_time())
