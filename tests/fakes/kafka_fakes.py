"""In-memory stand-ins for kafka-python's consumer, producer and reader, driven
by a fake clock: for unit tests of the stream worker and the stages on it."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any

from kafka.structs import TopicPartition

Record = namedtuple("Record", "topic partition offset timestamp key value")
Found = namedtuple("Found", "offset")


class Clock:
    """A monotonic clock that only moves when told (or when a fake client waits)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class FakeConsumer:
    """A consumer group member on one topic with N partitions. The first poll
    after ``subscribe`` assigns every partition (through the listener); an idle
    poll advances the clock by its timeout. With ``leak_after_pause`` the first
    poll after each ``pause`` still returns records, as a partition assigned
    during a wait or an already-fetched buffer would."""

    def __init__(self, topic: str, clock: Clock, partitions: int = 1,
                 leak_after_pause: bool = False) -> None:
        self.topic = topic
        self.clock = clock
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.logs: dict[TopicPartition, list[Record]] = {tp: [] for tp in self.tps}
        self.positions = {tp: 0 for tp in self.tps}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self.leak_after_pause = leak_after_pause
        self._leak = False
        self.listener: Any = None
        self._join = False
        self.on_idle: Callable[[], None] | None = None
        self.pause_calls = 0
        self.fail_commits = 0

    # -- test side -------------------------------------------------------------
    def add(self, value: bytes | None, partition: int = 0, key: bytes | None = b"BTC-USD",
            timestamp: int = 0) -> Record:
        tp = self.tps[partition]
        record = Record(self.topic, partition, len(self.logs[tp]), timestamp, key, value)
        self.logs[tp].append(record)
        return record

    def rebalance(self, keep: set[int]) -> None:
        """Revoke every partition, then assign those numbered in ``keep``."""
        revoked = set(self.assigned)
        self.assigned = set()
        self.listener.on_partitions_revoked(revoked)
        self.assigned = {tp for tp in self.tps if tp.partition in keep}
        for tp in self.assigned:
            self.positions[tp] = self.committed_offsets.get(tp, 0)
        self.listener.on_partitions_assigned(set(self.assigned))

    # -- the client's API --------------------------------------------------------
    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        assert topics == [self.topic]
        self.listener = listener
        self._join = True

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        if self._join:  # the first poll joins the group
            self._join = False
            self.assigned = set(self.tps)
            if self.listener is not None:
                self.listener.on_partitions_assigned(set(self.tps))
        budget = max_records if max_records is not None else 10**9
        out: dict[TopicPartition, list[Record]] = {}
        leak, self._leak = self._leak, False
        for tp in self.tps:
            if budget <= 0:
                break
            if tp not in self.assigned or (tp in self._paused and not leak):
                continue
            pos = self.positions[tp]
            chunk = self.logs[tp][pos: pos + budget]
            if chunk:
                out[tp] = chunk
                self.positions[tp] = pos + len(chunk)
                budget -= len(chunk)
        if not out:
            self.clock.now += max(timeout_ms, 1) / 1000.0
            if self.on_idle and not self._paused:
                self.on_idle()
        return out

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.tps} if topic == self.topic else set()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *tps: TopicPartition) -> None:
        self.pause_calls += 1
        self._paused.update(tps)
        self._leak = self.leak_after_pause

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp] = 0

    def commit(self, offsets: dict) -> None:
        if self.fail_commits:
            from kafka.errors import CommitFailedError

            self.fail_commits -= 1
            raise CommitFailedError("rebalancing")
        snapshot = {tp: om.offset for tp, om in offsets.items()}
        self.committed_offsets.update(snapshot)
        self.commits.append(snapshot)

    def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in tps}

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.positions[tp]


class FakeFuture:
    def __init__(self) -> None:
        self.is_done = False
        self.exception: Exception | None = None

    def failed(self) -> bool:
        return self.exception is not None


class FakeProducer:
    """Sends are acknowledged when ``acknowledge()`` or ``flush()`` is called (or
    at once with ``auto_ack``); ``fail_next_flush`` fails every pending send."""

    def __init__(self, auto_ack: bool = False) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list]] = []
        self.pending: list[FakeFuture] = []
        self.auto_ack = auto_ack
        self.fail_next_flush = False
        self.flushes = 0

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"",
             partition: int | None = None, headers: list | None = None) -> FakeFuture:
        self.sent.append((topic, key, value, headers or []))
        future = FakeFuture()
        if self.auto_ack:
            future.is_done = True
        else:
            self.pending.append(future)
        return future

    def acknowledge(self) -> None:
        for future in self.pending:
            future.is_done = True
        self.pending = []

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        for future in self.pending:
            future.is_done = True
            if self.fail_next_flush:
                future.exception = RuntimeError("broker said no")
        self.fail_next_flush = False
        self.pending = []

    def to(self, topic: str) -> list[tuple[bytes | None, bytes, dict[str, str]]]:
        """(key, value, headers) of what was sent to ``topic``."""
        return [(k, v, {n: h.decode() for n, h in hs}) for t, k, v, hs in self.sent if t == topic]


class FakeReader:
    """Group-less reads of a consumer's partitions (the history read back)."""

    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer
        self.tp: TopicPartition | None = None
        self.at = 0
        self.fetches = 0

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def offsets_for_times(self, query: dict) -> dict:
        out = {}
        for tp, ts in query.items():
            hit = next((r.offset for r in self.consumer.logs[tp] if r.timestamp >= ts), None)
            out[tp] = None if hit is None else Found(hit)
        return out

    def assign(self, tps: list[TopicPartition]) -> None:
        (self.tp,) = tps

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.at = offset

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self.fetches += 1
        assert self.tp is not None
        batch = self.consumer.logs[self.tp][self.at: self.at + (max_records or 500)]
        self.at += len(batch)
        return {self.tp: batch} if batch else {}
