"""The stream worker on fake clients and a fake clock: every guarantee a stage
relies on, with a pass-through stage."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pytest
from kafka.structs import TopicPartition
from kafka_fakes import Clock, FakeConsumer, FakeProducer, FakeReader
from prometheus_client import CollectorRegistry, Gauge

from cryptovol.runtime.history import History
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.worker import (
    Batch,
    Output,
    Record,
    Retry,
    Rewind,
    Stage,
    StreamWorker,
    WorkerConfig,
)

IN, OUT = "in", "out"


class Echo(Stage):
    """Produces every record's value to OUT; dead-letters b"bad"; hands values to sinks."""

    def __init__(self) -> None:
        self.restores: list[tuple[int, int]] = []  # (partition, first offset)
        self.dropped: list[set[int]] = []
        self.settled_batches = 0
        self.refuse_restore = 0

    def restore(self, tp: TopicPartition, records: Sequence[Record], history: History) -> bool:
        if self.refuse_restore:
            self.refuse_restore -= 1
            return False
        self.restores.append((tp.partition, records[0].offset))
        return True

    def drop(self, partitions: Collection[TopicPartition]) -> None:
        self.dropped.append({tp.partition for tp in partitions})

    def process(self, batch: Batch) -> Output:
        out = Output()
        for records in batch.values():
            for r in records:
                if r.value == b"bad":
                    out.dead.append((r, "bad record"))
                else:
                    out.produce.append((OUT, r.key, r.value))
                    out.items.append(r.value)
        return out

    def settled(self, output: Output) -> None:
        self.settled_batches += 1

    def health(self) -> tuple[bool, dict]:
        return True, {"echo_settled": self.settled_batches}


class ListSink:
    """Due at ``due_at`` items; fails ``fail`` flushes (``planned``: with a wait)."""

    def __init__(self, due_at: int = 1, fail: int = 0, planned: bool = False) -> None:
        self.due_at = due_at
        self.fail = fail
        self.planned = planned
        self.buffer: list[bytes] = []
        self.written: list[bytes] = []
        self.flush_calls = 0

    def add(self, items: Sequence[bytes]) -> None:
        self.buffer.extend(items)

    def due(self) -> bool:
        return len(self.buffer) >= self.due_at

    def flush(self) -> None:
        self.flush_calls += 1
        if self.fail:
            self.fail -= 1
            raise Retry("down", after_s=0.25 if self.planned else None)
        self.written.extend(self.buffer)
        self.buffer.clear()

    def __len__(self) -> int:
        return len(self.buffer)

    def health(self) -> tuple[bool, dict]:
        return not self.fail, {"sink_buffered": len(self.buffer)}


class Harness:
    def __init__(self, partitions: int = 1, *, sinks: Sequence[ListSink] = (),
                 auto_ack: bool = True, start: float = 1000.0, leak: bool = False,
                 **config: object) -> None:
        self.clock = Clock(start)
        self.consumer = FakeConsumer(IN, self.clock, partitions, leak_after_pause=leak)
        self.producer = FakeProducer(auto_ack=auto_ack)
        self.stage = Echo()
        self.sinks = list(sinks)
        self.shutdown = Shutdown(install=False)
        self.registry = CollectorRegistry()
        self.lag = Gauge("lag", "lag", ["partition"], registry=self.registry)
        self.worker = StreamWorker(
            WorkerConfig(inputs=(IN,), **{"max_records": 3, **config}),  # type: ignore[arg-type]
            self.consumer, self.producer, self.stage, self.sinks, shutdown=self.shutdown,
            reader=FakeReader(self.consumer), lag_gauge=self.lag, clock=self.clock)
        self.worker.subscribe()

    def add(self, *values: bytes, partition: int = 0) -> None:
        for v in values:
            self.consumer.add(v, partition)

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.worker.step()

    def committed(self, partition: int = 0) -> int | None:
        return self.consumer.committed_offsets.get(self.consumer.tps[partition])

    def produced(self) -> list[bytes]:
        return [v for _, v, _ in self.producer.to(OUT)]


def test_output_is_produced_in_order_and_offsets_committed_once_acknowledged() -> None:
    h = Harness(auto_ack=False, max_in_flight=1)
    h.add(b"0", b"1", b"2")
    h.steps(2)  # one batch in flight, not acknowledged
    assert h.produced() == [b"0", b"1", b"2"] and h.committed() is None
    h.producer.acknowledge()
    h.worker.step()
    assert h.committed() == 3 and h.stage.settled_batches == 1
    assert h.producer.flushes == 0  # acknowledgements are awaited, not forced
    h.add(*(b"%d" % i for i in range(3, 9)))
    h.steps(2)  # two batches in flight, more than allowed: wait for them
    assert h.producer.flushes == 1 and h.committed() == 9
    assert h.produced() == [b"%d" % i for i in range(9)]


def test_dead_letters_carry_the_record_and_its_offset_and_are_committed() -> None:
    h = Harness()
    h.add(b"a", b"bad", b"c")
    h.steps(2)
    assert h.produced() == [b"a", b"c"]
    [(key, value, headers)] = h.producer.to(IN + ".dlq")
    assert (key, value) == (b"BTC-USD", b"bad")
    assert headers["reason"] == "bad record" and headers["source_topic"] == IN
    assert headers["source_offset"] == "0:1"
    assert h.committed() == 3 and h.worker.stats.dead_lettered == 1


def test_sinks_get_acknowledged_items_and_commits_wait_until_they_are_flushed() -> None:
    sink = ListSink(due_at=5)
    h = Harness(sinks=[sink], auto_ack=False)
    h.add(b"1", b"2", b"3")
    h.worker.step()
    assert sink.buffer == [] and h.committed() is None  # not acknowledged yet
    h.producer.acknowledge()
    h.worker.step()
    assert sink.buffer == [b"1", b"2", b"3"] and h.committed() is None  # not durable yet
    h.add(b"4", b"5")
    h.worker.step()
    h.producer.acknowledge()
    h.worker.step()
    assert sink.written == [b"1", b"2", b"3", b"4", b"5"] and h.committed() == 5


@pytest.mark.parametrize("planned", [False, True])
def test_a_sink_that_cannot_write_is_retried_with_consumption_paused(planned: bool) -> None:
    sink = ListSink(fail=3, planned=planned)
    h = Harness(sinks=[sink], leak=True, retry_base_s=0.1, retry_max_s=0.4)
    h.add(b"1", b"2", b"3", b"4")
    h.worker.step()
    assert sink.written == [b"1", b"2", b"3"] and sink.flush_calls == 4
    assert h.committed() == 3
    assert h.consumer.pause_calls >= 3 and not h.consumer.paused()  # resumed after
    # records a poll returned during the waits were put back, not lost
    h.steps(2)
    assert sink.written == [b"1", b"2", b"3", b"4"] and h.committed() == 4
    assert h.worker.stats.sink_retries == (0 if planned else 3)


def test_shutdown_while_output_is_not_durable_commits_nothing() -> None:
    sink = ListSink(fail=10**6)
    h = Harness(sinks=[sink], retry_base_s=0.1, retry_max_s=0.2)
    h.add(b"1", b"2")
    flush = sink.flush

    def flush_then_shut_down() -> None:
        if sink.flush_calls == 3:
            h.shutdown.request()  # SIGTERM while the sink is down
        flush()

    sink.flush = flush_then_shut_down  # type: ignore[method-assign]
    h.worker.run()
    assert sink.flush_calls == 4  # the try during which shutdown came was the last
    assert h.committed() is None and sink.written == []
    assert h.consumer.commits == [] and not h.consumer.paused()


def test_a_failed_produce_rewinds_to_the_last_acknowledged_offsets_and_restores() -> None:
    h = Harness(auto_ack=False, max_in_flight=0, error_pause_s=0.0)
    h.add(*(b"%d" % i for i in range(6)))
    h.worker.step()  # batch 1 is flushed and acknowledged
    h.producer.fail_next_flush = True
    with pytest.raises(Rewind, match="3 of 3 records failed"):
        h.worker.step()
    h.worker.rewind("broker said no")
    assert h.committed() == 3
    assert h.stage.dropped[-1] == {0}
    h.producer.auto_ack = True
    h.steps(2)
    assert h.produced() == [b"0", b"1", b"2", b"3", b"4", b"5", b"3", b"4", b"5"]
    assert h.stage.restores == [(0, 0), (0, 3)]  # restored again from where it resumed
    assert h.committed() == 6


def test_rebalance_drops_state_restores_gained_partitions_and_commits_only_owned() -> None:
    h = Harness(partitions=2, auto_ack=False)
    h.add(b"a0", b"a1", partition=0)
    h.add(b"b0", b"b1", partition=1)
    h.worker.step()  # polled both partitions, unacknowledged
    assert sorted(h.stage.restores) == [(0, 0), (1, 0)]
    h.consumer.rebalance(keep={1})
    assert {0, 1} in h.stage.dropped[-2:] or h.stage.dropped[-2] == {0, 1}
    h.producer.acknowledge()
    h.worker.step()
    # settled after the rebalance: left to the partitions' next owners
    assert h.consumer.commits == []
    h.add(b"b2", partition=1)
    h.worker.step()
    assert h.stage.restores[-1] == (1, 0)  # gained again: restored before its first batch
    h.producer.acknowledge()
    h.worker.step()
    assert h.committed(1) == 3 and h.committed(0) is None


def test_a_stage_may_restore_a_partition_later() -> None:
    h = Harness()
    h.stage.refuse_restore = 1
    h.add(b"1")
    h.worker.step()
    h.add(b"2")
    h.worker.step()
    assert h.stage.restores == [(0, 1)]
    assert h.worker.stats.restores == 1


def test_batches_linger_until_full_or_the_linger_time() -> None:
    h = Harness(max_records=5, linger_ms=200)
    h.add(b"1")
    h.consumer.on_idle = lambda: h.add(b"x")
    h.worker.step()
    assert len(h.produced()) <= 5 and h.clock.now - 1000.0 >= 0.2 - 1e-9
    h.consumer.on_idle = None
    h.add(*(b"%d" % i for i in range(10)))
    before = len(h.produced())
    h.worker.step()
    assert len(h.produced()) - before == 5  # full: no lingering


def test_lag_is_reported_per_owned_partition() -> None:
    h = Harness(partitions=2, lag_interval_s=1.0)
    h.add(b"1", b"2", b"3", b"4", partition=0)
    h.add(b"5", partition=1)
    h.worker.step()
    lag = {s.labels["partition"]: s.value for m in h.registry.collect() for s in m.samples}
    assert lag == {"0": 1.0, "1": 1.0}  # three of partition 0's four read
    h.consumer.rebalance(keep={0})
    h.clock.now += 5
    h.worker.step()
    lag = {s.labels["partition"]: s.value for m in h.registry.collect() for s in m.samples}
    assert set(lag) == {"0"}


def test_a_failed_commit_is_counted_and_done_later() -> None:
    h = Harness()
    h.consumer.fail_commits = 1
    h.add(b"1")
    h.worker.step()
    assert h.committed() is None and h.worker.stats.commit_failures == 1
    h.worker.step()
    assert h.committed() == 1


@pytest.mark.parametrize("start", [5.0, 1e9])  # far below and far above the real clock
def test_health_reads_only_the_injected_clock(start: float) -> None:
    sink = ListSink()
    h = Harness(sinks=[sink], start=start, stall_s=60.0)
    h.add(b"1")
    h.worker.step()
    ok, details = h.worker.health()
    assert ok and details["loop_age_s"] == 0.0 and details["partitions"] == [0]
    assert details["echo_settled"] == 1 and details["sink_buffered"] == 0
    h.clock.now += 61
    ok, details = h.worker.health()
    assert not ok and details["loop_stalled"]
    h.worker.step()
    sink.fail = 1  # a part that says it is unwell makes the whole unready
    assert not h.worker.health()[0]


def test_decoded_yields_what_decodes_and_dead_letters_the_rest_with_the_reason() -> None:
    from cryptovol.core.codec import DecodeError
    from cryptovol.runtime.worker import decoded

    def decode(value: bytes) -> int:
        if not value.isdigit():
            raise DecodeError(f"not a number: {value!r}")
        return int(value)

    from types import SimpleNamespace

    records = [SimpleNamespace(value=v) for v in (b"1", b"x", b"3")]
    dead: list = []
    assert list(decoded(records, decode, dead)) == [1, 3]
    assert dead == [(records[1], "not a number: b'x'")]
