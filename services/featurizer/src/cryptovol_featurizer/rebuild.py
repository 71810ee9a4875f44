"""Rebuilding a partition's window state when this replica gains it.

Feature rows depend only on a bounded past (docs/features.md): a fresh engine
started ``rebuild_lookback_s`` of event time before the first record still to
process produces, from that record on, exactly the rows of a replica that had
run from the start. So on gaining a partition whose next record is at offset
``o`` with event time ``T``, the featurizer replays the records from the last
offset whose event time is at or before ``T - lookback - margin`` up to ``o``
through a fresh engine, emitting nothing.

The start offset is found with ``offsets_for_times`` on the Kafka timestamps
(close when the ingest publishes live) and checked against the records' own
event times, then narrowed by bisection on event time, so a replay that was
published faster than real time (Kafka timestamps far newer than event times)
is read back just as far as needed. Products sharing a partition are assumed to
share the exchange clock (event times grow together along the partition).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka.structs import TopicPartition

from cryptovol.core.codec import DecodeError, decode_tick
from cryptovol.core.ticks import Tick
from cryptovol.runtime.logs import get_logger

log = get_logger(__name__)

FETCH_TIMEOUT_S = 15.0


class ReadBack:
    """Reads one partition at arbitrary offsets with a group-less consumer."""

    def __init__(self, reader: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self._clock = clock

    def _records_from(self, tp: TopicPartition, offset: int, end: int):
        """Records of ``tp`` from ``offset`` (inclusive) to ``end`` (exclusive)."""
        self.reader.assign([tp])
        self.reader.seek(tp, offset)
        position = offset
        deadline = self._clock() + FETCH_TIMEOUT_S
        while position < end:
            batch = self.reader.poll(timeout_ms=500, max_records=2000).get(tp, [])
            if not batch:
                if self._clock() > deadline:
                    raise TimeoutError(f"no records from {tp} at offset {position} (end {end})")
                continue
            deadline = self._clock() + FETCH_TIMEOUT_S
            for record in batch:
                if record.offset >= end:
                    return
                position = record.offset + 1
                yield record

    def event_us_at(self, tp: TopicPartition, offset: int, end: int) -> int | None:
        """Event time of the first well-formed record at or after ``offset``."""
        for record in self._records_from(tp, offset, end):
            try:
                return decode_tick(record.value).event_us
            except DecodeError:
                continue
        return None

    def start_offset(self, tp: TopicPartition, first_offset: int, first_kafka_ms: int,
                     target_us: int, lookback_s: float) -> int:
        """The last offset in ``[beginning, first_offset]`` whose event time is at or
        before ``target_us`` (the beginning when there is none)."""
        beginning = self.reader.beginning_offsets([tp])[tp]
        if first_offset <= beginning:
            return first_offset
        found = self.reader.offsets_for_times({tp: max(0, first_kafka_ms - int(lookback_s * 1e3))})
        hint = found.get(tp)
        guess = min(hint.offset, first_offset) if hint is not None else first_offset
        lo, hi = beginning, first_offset  # invariant: answer in [lo, hi)
        at = self.event_us_at(tp, guess, first_offset) if guess < first_offset else None
        if at is not None and at <= target_us:
            lo = guess
        else:
            hi = max(guess, lo + 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            at = self.event_us_at(tp, mid, first_offset)
            if at is not None and at <= target_us:
                lo = mid
            else:
                hi = mid
        return lo

    def replay(self, tp: TopicPartition, start: int, end: int, feed: Callable[[Tick], None]
               ) -> int:
        """Feed the well-formed ticks of ``[start, end)`` in order; return how many."""
        fed = 0
        for record in self._records_from(tp, start, end):
            try:
                tick = decode_tick(record.value)
            except DecodeError:
                continue
            feed(tick)
            fed += 1
        return fed
