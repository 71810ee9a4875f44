"""Retry delays and request pacing."""

from __future__ import annotations

import random
import time
from collections.abc import Callable


def backoff_delay(
    attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: between half and all of
    ``min(max_s, base_s * 2**attempt)``, so retrying clients spread out."""
    ceiling = min(max_s, base_s * (2 ** min(attempt, 32)))
    return ceiling / 2 + rand() * ceiling / 2


class RateLimiter:
    """Token bucket: at most ``rate`` acquisitions per second on average, with
    bursts up to ``burst``. ``rate <= 0`` disables it."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def acquire(self) -> float:
        """Take one token, sleeping as needed; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        wait = (1.0 - self._tokens) / self.rate
        self._sleep(wait)
        self._tokens = 0.0
        self._last = self._clock()
        return wait
