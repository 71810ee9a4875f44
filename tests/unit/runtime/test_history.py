"""Finding where to start a read-back, on a fake partition."""

from __future__ import annotations

from collections import namedtuple

import orjson
import pytest
from kafka.structs import TopicPartition

from cryptovol.core.timestamps import format_micros
from cryptovol.runtime.history import History

Record = namedtuple("Record", "offset timestamp value")
Found = namedtuple("Found", "offset")
TP = TopicPartition("ticks.raw", 0)
T0 = 1_764_000_000_000_000


def event(k: int, event_us: int) -> bytes:
    return orjson.dumps({"k": k, "at": format_micros(event_us)})


def time_of(record: Record) -> int | None:
    try:
        return T0 + (orjson.loads(record.value)["k"]) * STEP_US
    except orjson.JSONDecodeError:
        return None  # a record without a time of its own


STEP_US = 250_000


class FakeReader:
    def __init__(self, records: list[Record], beginning: int = 0) -> None:
        self.records = records
        self.beginning = beginning
        self.at = 0
        self.fetches = 0

    def beginning_offsets(self, tps):  # type: ignore[no-untyped-def]
        return {tp: self.beginning for tp in tps}

    def offsets_for_times(self, query):  # type: ignore[no-untyped-def]
        (ts,) = query.values()
        hit = next((r.offset for r in self.records if r.timestamp >= ts), None)
        return {TP: None if hit is None else Found(hit)}

    def assign(self, tps) -> None:  # type: ignore[no-untyped-def]
        pass

    def seek(self, tp, offset) -> None:  # type: ignore[no-untyped-def]
        self.at = offset

    def poll(self, timeout_ms=0, max_records=None):  # type: ignore[no-untyped-def]
        self.fetches += 1
        batch = [r for r in self.records if r.offset >= self.at][:max_records or 500]
        if batch:
            self.at = batch[-1].offset + 1
        return {TP: batch} if batch else {}


def partition(n: int, kafka_step_ms: float, bad: set[int] = frozenset()) -> list[Record]:
    return [Record(k, int(1_000_000 + k * kafka_step_ms),
                   b"garbage" if k in bad else event(k, T0 + k * STEP_US)) for k in range(n)]


@pytest.mark.parametrize("kafka_step_ms", [250.0, 0.01])  # live, and a fast replay
def test_start_is_the_last_offset_at_or_before_the_target(kafka_step_ms: float) -> None:
    records = partition(20_000, kafka_step_ms, bad={12_345})
    reader = FakeReader(records)
    first = records[15_000]
    target = T0 + first.offset * STEP_US - 326_000_000  # 326 s before the first new record
    start = History(reader).start_offset(TP, first, target, 326.0, time_of)
    assert start == first.offset - 1304  # 326 s / 0.25 s
    assert reader.fetches < 40  # bisection, not a scan


def test_nothing_to_read_back_at_the_beginning_or_when_history_is_short() -> None:
    records = partition(100, 250.0)
    back = History(FakeReader(records))
    assert back.start_offset(TP, records[0], T0, 326.0, time_of) == 0
    # all history is newer than the target: start from the beginning
    assert back.start_offset(TP, records[50], T0 - 1, 326.0, time_of) == 0
    assert History(FakeReader(records, beginning=30)).start_offset(
        TP, records[50], T0 - 1, 326.0, time_of) == 30


def test_records_are_read_in_order_between_two_offsets() -> None:
    records = partition(50, 250.0, bad={3, 7})
    got = list(History(FakeReader(records)).records(TP, 2, 20))
    assert [r.offset for r in got] == list(range(2, 20))


def test_a_partition_that_yields_nothing_times_out_on_the_injected_clock() -> None:
    now = [0.0]

    class Silent(FakeReader):
        def poll(self, timeout_ms=0, max_records=None):  # type: ignore[no-untyped-def]
            now[0] += 1.0
            return {}

    with pytest.raises(TimeoutError, match="no records"):
        list(History(Silent([]), clock=lambda: now[0]).records(TP, 0, 10))
    assert now[0] < 20
