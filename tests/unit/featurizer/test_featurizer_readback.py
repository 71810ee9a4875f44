"""Finding where to start the read-back, on a fake partition."""

from __future__ import annotations

from collections import namedtuple

import orjson
import pytest
from kafka.structs import TopicPartition

from cryptovol.core.timestamps import format_micros
from cryptovol_featurizer.rebuild import ReadBack

Record = namedtuple("Record", "offset timestamp value")
Found = namedtuple("Found", "offset")
TP = TopicPartition("ticks.raw", 0)
T0 = 1_764_000_000_000_000


def tick(k: int, event_us: int) -> bytes:
    stamp = format_micros(event_us)
    return orjson.dumps({"record_id": f"X:{k}", "product_id": "X", "event_time": stamp,
                         "receive_time": stamp, "price": 100.0})


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


def partition(n: int, event_step_us: int, kafka_step_ms: float, bad: set[int] = frozenset()):
    return [Record(k, int(1_000_000 + k * kafka_step_ms),
                   b"garbage" if k in bad else tick(k, T0 + k * event_step_us))
            for k in range(n)]


@pytest.mark.parametrize("kafka_step_ms", [250.0, 0.01])  # live, and a fast replay
def test_start_is_the_last_offset_at_or_before_the_target(kafka_step_ms: float) -> None:
    records = partition(20_000, 250_000, kafka_step_ms, bad={12_345})
    reader = FakeReader(records)
    first = 15_000
    target = T0 + first * 250_000 - 326_000_000  # 326 s before the first new tick
    start = ReadBack(reader).start_offset(TP, first, records[first].timestamp, target, 326.0)
    assert start == first - 1304  # 326 s / 0.25 s
    assert reader.fetches < 40  # bisection, not a scan


def test_nothing_to_read_back_at_the_beginning_or_when_history_is_short() -> None:
    records = partition(100, 250_000, 250.0)
    back = ReadBack(FakeReader(records))
    assert back.start_offset(TP, 0, records[0].timestamp, T0, 326.0) == 0
    # all history is newer than the target: start from the beginning
    assert back.start_offset(TP, 50, records[50].timestamp, T0 - 1, 326.0) == 0
    assert ReadBack(FakeReader(records, beginning=30)).start_offset(
        TP, 50, records[50].timestamp, T0 - 1, 326.0) == 30


def test_replay_feeds_well_formed_ticks_in_order() -> None:
    records = partition(50, 250_000, 250.0, bad={3, 7})
    seen: list[str] = []
    fed = ReadBack(FakeReader(records)).replay(TP, 2, 20, lambda t: seen.append(t.record_id))
    assert fed == 16 and seen == [f"X:{k}" for k in range(2, 20) if k not in (3, 7)]
