"""The label's own horizon: the distribution of RV_60 over the last 30 minutes.

The spike label compares the next minute's volatility with ``tau``, the 90th
percentile of RV_60 over the preceding 30 minutes (DESIGN section 5). A model
that is to transfer across regimes needs that context as an input, computed by
the same engine as every other feature. :class:`RvContext` keeps one product's
RV_60 values of the last ``CONTEXT_S`` seconds and answers, per tick:

- the ``CONTEXT_QUANTILE`` quantile (linear interpolation between order
  statistics, as pandas' rolling quantile and so the label compute it), from a
  sorted list: O(log n) per value added or expired;
- the mean and the sample standard deviation of ``ln RV_60``, from exact
  integer sums of the logarithms as multiples of 2**-64 (the idea of
  :mod:`cryptovol.core.features.exact`, at a scale far below a log's rounding and
  cheap to multiply): O(1) per value;
- how many values it holds and how old the oldest is (the warm-up rule).

Unlike the windows of a segment, the context spans recording gaps, exactly as
the label's ``tau`` does: an RV_60 value measured before a gap is still a fact
about the last 30 minutes. Only values whose own 60 s window lies inside its
segment enter (the label's rule), and a backwards clock jump clears it.
Every answer depends only on the values inside the window, never on the order
they came in or on what came before, so a rebuilt engine matches an
uninterrupted one bit for bit.
"""

from __future__ import annotations

import math

from sortedcontainers import SortedList

#: Seconds of RV_60 history the context holds (the label's ``lookback_s``).
CONTEXT_S = 1800
#: The quantile of RV_60 over the context (the label's ``quantile``): ``tau``.
CONTEXT_QUANTILE = 0.9
#: The context is warm once its oldest value is this old and it holds this many
#: values: the label's ``min_history_s`` and ``min_samples``, so every labelled
#: row has a warm context.
CONTEXT_MIN_HISTORY_S = 1740
CONTEXT_MIN_VALUES = 300
#: Volatilities below this are taken as this before a logarithm or a division
#: (a flat minute has RV 0; one tick of 0.01 USD at 90,000 USD is 1.1e-7).
RV_FLOOR = 1e-10
#: A context whose ln RV_60 values spread less than this has no z-score (a
#: standard deviation that small is rounding, not a distribution).
LOGSTD_FLOOR = 1e-3

LOG_SCALE_BITS = 64
_LOG_SCALE = 2.0**LOG_SCALE_BITS
_W_US = CONTEXT_S * 1_000_000
_HISTORY_US = CONTEXT_MIN_HISTORY_S * 1_000_000
_COMPACT_MIN = 1024
_log = math.log


class RvContext:
    """RV_60 values of one product over the last ``CONTEXT_S`` seconds."""

    __slots__ = ("head", "logs", "sum_log", "sum_log2", "times", "values", "window")

    def __init__(self) -> None:
        self.times: list[int] = []  # event time (us) of each value, oldest first
        self.values: list[float] = []
        self.logs: list[int] = []  # ln max(value, RV_FLOOR) in units of 2**-64, truncated
        self.head = 0  # index of the oldest value still inside the window
        self.window: SortedList = SortedList()
        self.sum_log = 0  # exact sums over the window, scale 2**64 and 2**128
        self.sum_log2 = 0

    def __len__(self) -> int:
        return len(self.times) - self.head

    def add(self, t: int, value: float) -> None:
        """A new RV_60 value measured at event time ``t`` (not older than the last)."""
        q = int(_log(value if value > RV_FLOOR else RV_FLOOR) * _LOG_SCALE)
        self.times.append(t)
        self.values.append(value)
        self.logs.append(q)
        self.window.add(value)
        self.sum_log += q
        self.sum_log2 += q * q

    def expire(self, t: int) -> None:
        """Drop the values at or before ``t - CONTEXT_S``: the window is (t - 30 min, t]."""
        edge = t - _W_US
        times, head = self.times, self.head
        end = len(times)
        while head < end and times[head] <= edge:
            self.window.remove(self.values[head])
            q = self.logs[head]
            self.sum_log -= q
            self.sum_log2 -= q * q
            head += 1
        if head >= _COMPACT_MIN and head * 2 >= end:
            del times[:head], self.values[:head], self.logs[:head]
            head = 0
        self.head = head

    def warm(self, t: int) -> bool:
        n = len(self)
        return n >= CONTEXT_MIN_VALUES and t - self.times[self.head] >= _HISTORY_US

    def quantile(self) -> float:
        """The ``CONTEXT_QUANTILE`` of the window, NaN if it is empty."""
        n = len(self.window)
        if not n:
            return math.nan
        pos = CONTEXT_QUANTILE * (n - 1)
        lo = int(pos)
        low = self.window[lo]
        if lo == pos or lo + 1 >= n:
            return low
        return low + (self.window[lo + 1] - low) * (pos - lo)

    def log_mean(self) -> float:
        n = len(self)
        return self.sum_log / (n << LOG_SCALE_BITS) if n else math.nan  # one rounding

    def log_std(self) -> float:
        """Sample standard deviation (ddof 1); the numerator ``n sum(x^2) - sum(x)^2``
        is an exact integer, never negative."""
        n = len(self)
        if n < 2:
            return math.nan
        numerator = n * self.sum_log2 - self.sum_log * self.sum_log
        return math.sqrt(numerator / (n * (n - 1) << 2 * LOG_SCALE_BITS))
