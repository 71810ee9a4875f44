"""Reading a partition's history back, for stages that rebuild state.

A stage whose output depends on a bounded past (the featurizer's windows, an
evaluator's horizon) restores a partition it gains by replaying the records
from somewhat before its first record still to process. :meth:`History.start_offset`
finds where to start: ``offsets_for_times`` on the Kafka timestamps gives a
guess (close when records were produced live), checked against the records'
own times, then narrowed by bisection, so a replay that was produced faster
than real time (Kafka timestamps far newer than event times) is read back just
as far as needed. Records sharing a partition are assumed to share a clock
(their own times grow together along the partition).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka.structs import TopicPartition

FETCH_TIMEOUT_S = 15.0

TimeOf = Callable[[Any], "int | None"]
"""A record's own time (epoch microseconds), or None for a record without one."""


class History:
    """Reads one partition at arbitrary offsets with a group-less consumer."""

    def __init__(self, reader: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self._clock = clock

    def records(self, tp: TopicPartition, start: int, end: int) -> Iterator[Any]:
        """The records of ``tp`` from ``start`` (inclusive) to ``end`` (exclusive)."""
        self.reader.assign([tp])
        self.reader.seek(tp, start)
        position = start
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

    def time_at(self, tp: TopicPartition, offset: int, end: int, time_of: TimeOf) -> int | None:
        """The time of the first record at or after ``offset`` (before ``end``) that has one."""
        for record in self.records(tp, offset, end):
            at = time_of(record)
            if at is not None:
                return at
        return None

    def start_offset(self, tp: TopicPartition, first: Any, target_us: int, lookback_s: float,
                     time_of: TimeOf) -> int:
        """The last offset in ``[beginning, first.offset]`` whose record's time is
        at or before ``target_us`` (the beginning when there is none). ``first``
        is the first record still to process; ``lookback_s`` how far before it
        the target lies, to guess from its Kafka timestamp."""
        first_offset = first.offset
        beginning = self.reader.beginning_offsets([tp])[tp]
        if first_offset <= beginning:
            return first_offset
        found = self.reader.offsets_for_times(
            {tp: max(0, first.timestamp - int(lookback_s * 1e3))})
        hint = found.get(tp)
        guess = min(hint.offset, first_offset) if hint is not None else first_offset
        lo, hi = beginning, first_offset  # invariant: the answer is in [lo, hi)
        at = self.time_at(tp, guess, first_offset, time_of) if guess < first_offset else None
        if at is not None and at <= target_us:
            lo = guess
        else:
            hi = max(guess, lo + 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            at = self.time_at(tp, mid, first_offset, time_of)
            if at is not None and at <= target_us:
                lo = mid
            else:
                hi = mid
        return lo
