"""Which ticks of a product's stream count, at what time, in which segment (pure).

The one statement of the tick-acceptance rules, shared by the features engine
(whose rows the model scores) and the live evaluator (whose labels grade
them), so both see exactly the same accepted ticks, the same clamped times and
the same gap-free segments. Deterministic, in arrival order per product:

1. a price that is not a positive number: dropped (``malformed``);
2. older than the last accepted event time by more than ``jump_s`` and
   received no earlier than the last accepted tick: a backwards clock jump,
   a new segment starts (``jump``);
3. otherwise older by more than ``grace_s``: dropped (``duplicate`` when its
   ``record_id`` was accepted in the segment's last ``LONGEST_WINDOW_S``, else
   ``late``);
4. a ``record_id`` accepted in the segment's last ``LONGEST_WINDOW_S``:
   dropped (``duplicate``);
5. older by at most ``grace_s``: accepted, its time clamped to the last
   event time (``out_of_order``);
6. newer by more than ``gap_s``: a new segment starts (``gap``);
7. otherwise accepted (``ok``); a product's first tick is ``first``.
"""

from __future__ import annotations

import math
from collections import deque

from cryptovol.core.features.config import FeatureConfig
from cryptovol.core.features.names import LONGEST_WINDOW_S

OK, OUT_OF_ORDER, GAP, JUMP, FIRST = "ok", "out_of_order", "gap", "jump", "first"
DUPLICATE, LATE, MALFORMED = "duplicate", "late", "malformed"
DROPPED = frozenset({DUPLICATE, LATE, MALFORMED})
NEW_SEGMENT = frozenset({FIRST, GAP, JUMP})

_ID_MEMORY_US = LONGEST_WINDOW_S * 1_000_000
_PRUNE_EVERY = 1024
_INF = math.inf


class _Stream:
    __slots__ = ("id_times", "ids", "last", "last_received", "segment")

    def __init__(self, segment: int, t: int) -> None:
        self.segment = segment
        self.last = t
        self.last_received = 0
        self.ids: set[str] = set()
        self.id_times: deque[tuple[int, str]] = deque()


class TickGate:
    """Per product: the last accepted event time, the segment, the recent record ids.

    :meth:`admit` returns the outcome of one tick; for an accepted one,
    ``time_us`` is the time it counts at and ``segment`` its segment (numbered
    per product from 0 since the gate started)."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        cfg = config or FeatureConfig()
        self._gap, self._grace, self._jump = cfg.gap_us, cfg.grace_us, cfg.jump_us
        self._streams: dict[str, _Stream] = {}
        self._segments: dict[str, int] = {}
        self.time_us = 0
        self.segment = 0

    def _start(self, product_id: str, t: int) -> _Stream:
        seg = self._segments.get(product_id, -1) + 1
        self._segments[product_id] = seg
        st = self._streams[product_id] = _Stream(seg, t)
        return st

    def admit(self, record_id: str, product_id: str, t: int, received: int | None,
              price: float) -> str:
        if not 0 < price < _INF:
            return MALFORMED
        st = self._streams.get(product_id)
        if st is None:
            st = self._start(product_id, t)
            outcome = FIRST
        else:
            last = st.last
            if t < last - self._grace:
                # A backwards clock jump is older than the jump limit yet freshly
                # received; a redelivered old tick was received long ago, too.
                if t < last - self._jump and received is not None \
                        and received >= st.last_received:
                    st = self._start(product_id, t)
                    outcome = JUMP
                else:
                    return DUPLICATE if record_id in st.ids else LATE
            elif record_id in st.ids:
                return DUPLICATE
            elif t < last:
                t = last
                outcome = OUT_OF_ORDER
            elif t - last > self._gap:
                st = self._start(product_id, t)
                outcome = GAP
            else:
                outcome = OK
        st.last = t
        if received is not None:
            st.last_received = received
        st.ids.add(record_id)
        id_times = st.id_times
        id_times.append((t, record_id))
        if len(id_times) > _PRUNE_EVERY and id_times[0][0] < t - _ID_MEMORY_US - 1_000_000:
            edge, ids = t - _ID_MEMORY_US, st.ids
            while id_times[0][0] < edge:
                ids.discard(id_times.popleft()[1])
        self.time_us = t
        self.segment = st.segment
        return outcome

    def reset(self, product_id: str | None = None) -> None:
        """Forget one product (or every product); its next tick starts a new segment."""
        if product_id is None:
            self._streams.clear()
        else:
            self._streams.pop(product_id, None)

    def last_time_us(self, product_id: str) -> int | None:
        st = self._streams.get(product_id)
        return None if st is None else st.last
