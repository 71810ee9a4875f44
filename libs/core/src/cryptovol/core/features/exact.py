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

#: Every summed quantity ``x`` is kept as ``int(x * SCALE)`` (truncated toward zero);
#: a sum of them back as a float is ``float(total) * INV_SCALE`` (of products of two:
#: ``* INV_SCALE2``), correctly rounded once.
SCALE_BITS = 200
SCALE = 2.0**SCALE_BITS
INV_SCALE = 2.0**-SCALE_BITS
INV_SCALE2 = 2.0 ** (-2 * SCALE_BITS)
