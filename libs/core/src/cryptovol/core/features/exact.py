"""Exact running sums: floats as scaled Python integers.

Every running sum of the engine is kept as an arbitrary-precision integer of
``x * 2**SCALE_BITS`` (truncated; exact for every value with no bits below
``2**-SCALE_BITS``, which covers every log return, spread and imbalance a
market produces). Integer sums have no rounding error at all: no catastrophic
cancellation after millions of ticks, no drift between adding a tick and
removing it again, and a window's sum depends only on the ticks inside it,
never on the order they arrived or on what came before. That last property is
what lets a restarted featurizer rebuild its windows from a short read-back
and produce the very same bits as an uninterrupted run.
"""

from __future__ import annotations

import math

SCALE_BITS = 200
SCALE = 2.0**SCALE_BITS
INV_SCALE = 2.0**-SCALE_BITS
INV_SCALE2 = 2.0 ** (-2 * SCALE_BITS)


def to_fixed(x: float) -> int:
    """``x`` as an integer multiple of ``2**-SCALE_BITS`` (truncated toward zero)."""
    return int(x * SCALE)


def from_fixed(value: int) -> float:
    """A sum of :func:`to_fixed` values back as a float, correctly rounded."""
    return float(value) * INV_SCALE


def from_fixed2(value: int) -> float:
    """A sum of products of two :func:`to_fixed` values, correctly rounded."""
    return float(value) * INV_SCALE2


def fixed_mean(total: int, count: int) -> float:
    """``total / count`` in float with a single rounding."""
    return total / (count << SCALE_BITS)


def fixed_std(total: int, total_sq: int, count: int) -> float:
    """Sample standard deviation (ddof 1) from the exact sum of values and the
    exact sum of their squares (at scale ``2**(2*SCALE_BITS)``). The numerator
    ``n*sum(x^2) - sum(x)^2`` is computed in integers, so it is exact and never
    negative."""
    numerator = count * total_sq - total * total
    return math.sqrt(numerator / (count * (count - 1)) * INV_SCALE2)
