"""The featurizer loop on fake Kafka clients: commits follow acknowledgements,
failed produces rewind, malformed ticks are dead-lettered."""

from __future__ import annotations

import time
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka.structs import TopicPartition

from cryptovol.core.codec import encode_tick
from cryptovol.core.schemas import FeatureRow
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol_featurizer.service import Featurizer, ProduceFailed
from cryptovol_featurizer.settings import FeaturizerSettings

Record = namedtuple("Record", "topic partition offset timestamp key value")
TP = TopicPartition("ticks.raw", 0)


class FakeFuture:
    def __init__(self) -> None:
        self.is_done = False
        self.exception: Exception | None = None

    def failed(self) -> bool:
        return self.exception is not None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list]] = []
        self.pending: list[FakeFuture] = []
        self.fail_next_flush = False

    def send(self, topic, key=None, value=None, partition=None, headers=None):  # type: ignore[no-untyped-def]
        self.sent.append((topic, key, value, headers or []))
        future = FakeFuture()
        self.pending.append(future)
        return future

    def acknowledge(self) -> None:
        for future in self.pending:
            future.is_done = True
        self.pending = []

    def flush(self, timeout=None) -> None:  # type: ignore[no-untyped-def]
        for future in self.pending:
            future.is_done = True
            if self.fail_next_flush:
                future.exception = RuntimeError("broker said no")
        self.fail_next_flush = False
        self.pending = []

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}


class FakeConsumer:
    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.at = 0
        self.commits: list[int] = []
        self.listener = None

    def subscribe(self, topics, listener=None) -> None:  # type: ignore[no-untyped-def]
        self.listener = listener

    def poll(self, timeout_ms=0, max_records=None):  # type: ignore[no-untyped-def]
        if self.listener is not None:  # the first poll joins the group
            listener, self.listener = self.listener, None
            listener.on_partitions_assigned([TP])
        batch = self.records[self.at: self.at + (max_records or 10)]
        self.at += len(batch)
        return {TP: batch} if batch else {}

    def commit(self, offsets) -> None:  # type: ignore[no-untyped-def]
        self.commits.append(offsets[TP].offset)

    def committed(self, tp):  # type: ignore[no-untyped-def]
        return self.commits[-1] if self.commits else None

    def seek(self, tp, offset) -> None:  # type: ignore[no-untyped-def]
        self.at = offset

    def seek_to_beginning(self, tp) -> None:  # type: ignore[no-untyped-def]
        self.at = 0

    def position(self, tp) -> int:  # type: ignore[no-untyped-def]
        return self.at

    def end_offsets(self, tps):  # type: ignore[no-untyped-def]
        return {tp: len(self.records) for tp in tps}


class FakeReader:
    """Group-less reads of the same records (the read-back)."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.at = 0

    def beginning_offsets(self, tps):  # type: ignore[no-untyped-def]
        return {tp: 0 for tp in tps}

    def offsets_for_times(self, query):  # type: ignore[no-untyped-def]
        return {tp: namedtuple("Found", "offset")(0) for tp in query}

    def assign(self, tps) -> None:  # type: ignore[no-untyped-def]
        pass

    def seek(self, tp, offset) -> None:  # type: ignore[no-untyped-def]
        self.at = offset

    def poll(self, timeout_ms=0, max_records=None):  # type: ignore[no-untyped-def]
        batch = self.records[self.at: self.at + (max_records or 10)]
        self.at += len(batch)
        return {TP: batch} if batch else {}


@pytest.fixture
def records(recordings_dir: Path) -> list[Record]:
    first = sorted(recordings_dir.glob("*.ndjson.gz"))[0]
    values = [encode_tick(t) for t in list(read_ticks(open_recordings([first])))[:30]]
    values[5] = b"{broken"
    return [Record("ticks.raw", 0, k, 0, b"BTC-USD", v) for k, v in enumerate(values)]


def make(records: list[Record], clock: Callable[[], float] = time.monotonic,
         ) -> tuple[Featurizer, FakeConsumer, FakeProducer]:
    settings = FeaturizerSettings(poll_max_records=10, parquet_enabled=False, topic_raw="ticks.raw",
                                  topic_features="ticks.features")
    consumer, producer = FakeConsumer(records), FakeProducer()
    service = Featurizer(settings, consumer, producer, FakeReader(records),
                         Shutdown(install=False), clock=clock)
    service.subscribe()
    return service, consumer, producer


@pytest.mark.parametrize("start", [0.0, 1e9])
def test_health_reads_only_the_injected_clock(records: list[Record], start: float) -> None:
    now = [start]  # far below or above the real monotonic clock (time since boot)
    service, _consumer, _producer = make(records, clock=lambda: now[0])
    assert service.health()[0] is True
    now[0] += service.settings.stall_s + 1
    assert service.health()[0] is False


def test_offsets_are_committed_only_once_rows_are_acknowledged(records: list[Record]) -> None:
    service, consumer, producer = make(records)
    service.step()
    assert consumer.commits == []  # produced, not yet acknowledged
    producer.acknowledge()
    service.step()  # settles the first batch, produces the second
    assert consumer.commits == [10]
    producer.acknowledge()
    service.step()
    producer.acknowledge()
    service.step()
    assert consumer.commits[-1] == 30
    rows = [FeatureRow.model_validate_json(v) for t, _, v, _ in producer.sent
            if t == "ticks.features"]
    assert len(rows) == 29 and service.stats.emitted == 29


def test_malformed_ticks_go_to_the_dead_letter_topic(records: list[Record]) -> None:
    service, _consumer, producer = make(records)
    service.step()
    dead = [(v, dict(h)) for t, _, v, h in producer.sent if t == "ticks.raw.dlq"]
    assert dead == [(b"{broken", dead[0][1])]
    assert dead[0][1]["source_offset"] == b"0:5" and b"invalid JSON" in dead[0][1]["reason"]


def test_a_failed_produce_rewinds_to_the_last_commit_and_rebuilds(records: list[Record]) -> None:
    service, consumer, producer = make(records)
    service.step()
    producer.acknowledge()
    service.step()  # commits 10; the second batch is in flight
    producer.fail_next_flush = True
    with pytest.raises(ProduceFailed):
        service._settle(wait=True)  # what the loop does with too many batches in flight
    service._recover("broker said no")
    assert consumer.commits[-1] == 10 and consumer.at == 10
    assert service.stats.produce_failures == 1 and not service.partitions
    while consumer.at < len(records):
        service.step()
        producer.acknowledge()
    service.step()
    service.close()
    assert consumer.commits[-1] == 30
    rows: dict[str, bytes] = {}
    for topic, _, value, _ in producer.sent:
        if topic == "ticks.features":
            rid = FeatureRow.model_validate_json(value).record_id
            assert rows.setdefault(rid, value) == value  # a replayed row is the same row
    assert len(rows) == 29 and service.stats.rebuilds == 2
