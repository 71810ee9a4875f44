"""The stream worker: the one consume -> process -> produce -> commit loop that
every Kafka stage of the pipeline runs on.

A stage supplies a :class:`Stage` (a pure step per batch, plus optional hooks)
and its :class:`Sink` objects; the worker owns everything else:

- **poll**: batches of up to ``max_records``, lingering up to ``linger_ms``
  after the first record to fill one;
- **process**: ``stage.process(batch)`` returns an :class:`Output`: records to
  produce, input records to dead-letter (to ``<topic>.dlq``, reason in the
  headers) and items for the sinks;
- **produce and acknowledge**: a batch's records and dead letters are sent at
  once; up to ``max_in_flight`` batches wait for acknowledgements while later
  ones are processed, so the broker's round trip does not stall the loop;
- **commit after durable output**: once every record of a batch is
  acknowledged, ``stage.settled(output)`` does its accounting and the sinks get
  the items; the batch's offsets are committed when every sink is flushed
  (each flushes when it says it is due);
- **rebalance and state**: partitions revoked or gained (and every partition
  after a failed produce, which rewinds to the last acknowledged offsets) have
  their state dropped (``stage.drop``); before the first batch of a partition
  the stage restores it from the partition's history (``stage.restore``);
- **back-pressure**: a sink that cannot write raises :class:`Retry`; the worker
  waits (backoff with jitter, or as long as the sink asks) with its partitions
  paused but still polled, so the group keeps the member, and nothing is
  committed meanwhile;
- **lag** per partition, **health** (loop age and counts, plus the stage's and
  the sinks' own), **graceful shutdown** (settle, flush, commit what is durable).

Delivery is at least once: after a crash, a rebalance or a failed produce,
the records after the last commit are processed again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from kafka import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from cryptovol.core.codec import DecodeError
from cryptovol.runtime.history import History
from cryptovol.runtime.kafka import DeadLetter
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.pacing import Backoff

log = get_logger(__name__)

Record = Any  # a consumer record: topic, partition, offset, timestamp, key, value
Batch = Mapping[TopicPartition, Sequence[Record]]
T = TypeVar("T")


def decoded(records: Iterable[Record], decode: Callable[[Any], T],
            dead: list[tuple[Record, str]]) -> Iterator[T]:
    """Each record's value through ``decode``; a record it refuses with a
    ``DecodeError`` goes to ``dead`` with the reason instead."""
    for record in records:
        try:
            yield decode(record.value)
        except DecodeError as exc:
            dead.append((record, str(exc)))


@dataclass(slots=True)
class Output:
    """What a stage made of one batch."""

    produce: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    """(topic, key, value) records to produce."""
    dead: list[tuple[Record, str]] = field(default_factory=list)
    """Input records that cannot be processed, with the reason: dead-lettered."""
    items: list[Any] = field(default_factory=list)
    """Handed to the sinks once the batch's records are acknowledged."""
    tally: Any = None
    """The stage's own accounting, handed back to ``stage.settled``."""


class Stage:
    """A pipeline stage on the worker. Only :meth:`process` is required."""

    def process(self, batch: Batch) -> Output:
        """The step: one polled batch (records per partition, in offset order)."""
        raise NotImplementedError

    def restore(self, tp: TopicPartition, records: Sequence[Record], history: History) -> bool:
        """Called before the first batch of a partition this worker gained (or
        after a rewind), with that batch's records of it: rebuild its state from
        ``history``. Return False to be asked again with the next batch."""
        return True

    def drop(self, partitions: Collection[TopicPartition]) -> None:
        """Forget the state of partitions revoked, gained or rewound."""

    def settled(self, output: Output) -> None:
        """Every record of ``output`` is acknowledged (metrics, counts)."""

    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {}


class Sink(Protocol):
    """Durable output beside Kafka (files, another service). :meth:`flush` returns
    only once everything added is durable; it raises :class:`Retry` (or any
    error) when it cannot write now, and is called again later."""

    def add(self, items: Sequence[Any]) -> None: ...
    def due(self) -> bool: ...
    def flush(self) -> None: ...
    def __len__(self) -> int: ...


class Retry(Exception):
    """A sink cannot write now. Without ``after_s`` it is a failure (the worker backs
    off, with jitter); with it, a planned wait (a rate limit, an open breaker)."""

    def __init__(self, reason: str, after_s: float | None = None) -> None:
        super().__init__(reason)
        self.after_s = after_s


class Interrupted(Exception):
    """Shutdown was requested while output was waiting to become durable."""


class Rewind(Exception):
    """Output of a batch was not acknowledged, or state could not be restored: go
    back to the last acknowledged offsets."""


@dataclass(frozen=True)
class WorkerConfig:
    inputs: tuple[str, ...]
    max_records: int = 2000
    linger_ms: int = 0
    poll_timeout_ms: int = 200
    max_in_flight: int = 4
    produce_timeout_s: float = 30.0
    lag_interval_s: float = 5.0
    stall_s: float = 60.0
    retry_base_s: float = 0.2
    retry_max_s: float = 10.0
    error_pause_s: float = 1.0  # after a Kafka error or a rewind, before going on


@dataclass
class _Pending:
    """One batch between producing its output and committing its offsets."""

    generation: int
    progress: dict[TopicPartition, int]  # next offset per partition
    output: Output
    futures: list[Any]
    _checked: int = 0

    def acknowledged(self) -> bool:
        futures = self.futures
        while self._checked < len(futures):
            if not futures[self._checked].is_done:
                return False
            self._checked += 1
        return True


@dataclass
class Stats:
    """Counts for /health (the services' Prometheus metrics carry the rates)."""

    last_loop_at: float  # on the worker's own clock, never the real one
    records: int = 0
    produced: int = 0
    dead_lettered: int = 0
    restores: int = 0
    rewinds: int = 0
    commit_failures: int = 0
    sink_retries: int = 0
    last_error: str | None = None


class StreamWorker:
    def __init__(
        self,
        config: WorkerConfig,
        consumer: Any,
        producer: Any,
        stage: Stage,
        sinks: Sequence[Sink] = (),
        *,
        shutdown: Shutdown,
        reader: Any = None,
        lag_gauge: Any = None,
        lag_by_topic: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.consumer = consumer
        self.producer = producer
        self.stage = stage
        self.sinks = list(sinks)
        self.shutdown = shutdown
        self.history = History(reader, clock) if reader is not None else None
        self.dead_letters = DeadLetter(producer)
        self.lag_gauge = lag_gauge
        self.lag_by_topic = lag_by_topic  # the gauge's labels: (topic, partition), not (partition,)
        self._clock = clock
        self.backoff = Backoff(config.retry_base_s, config.retry_max_s)
        self.assigned: set[TopicPartition] = set()
        self.restored: set[TopicPartition] = set()
        self.processed: dict[TopicPartition, int] = {}  # next offset; its output acknowledged
        self.committed: dict[TopicPartition, int] = {}
        self.stats = Stats(last_loop_at=clock())
        self._in_flight: deque[_Pending] = deque()
        self._generation = 0
        self._next_lag_at = 0.0
        self._lag_partitions: set[tuple[str, ...]] = set()
        self._interrupted = False

    # -- group membership ------------------------------------------------------
    def subscribe(self, metadata_tries: int = 300) -> None:
        """Join the group on the input topics, once the client knows their
        partitions (a group formed before a new topic's metadata arrived would
        assign it to nobody until the next metadata refresh); a minute at most."""
        waiting = [t for t in self.config.inputs if not self.consumer.partitions_for_topic(t)]
        for _ in range(metadata_tries):
            if not waiting or self.shutdown.wait(0.2):
                break
            waiting = [t for t in waiting if not self.consumer.partitions_for_topic(t)]
        if waiting:
            log.warning("subscribing to topics without partitions yet", extra={"topics": waiting})
        worker = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # type: ignore[no-untyped-def]
                worker._on_revoked(set(revoked))

            def on_partitions_assigned(self, assigned):  # type: ignore[no-untyped-def]
                worker._on_assigned(set(assigned))

        self.consumer.subscribe(list(self.config.inputs), listener=Listener())

    # The client may run these callbacks where blocking calls (commit, flush) are
    # refused: they only mark state. Output settled later for a partition revoked
    # meanwhile still reaches the sinks, but its offsets are left to the
    # partition's next owner, which processes those records again.
    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.stage.drop(revoked)
        for tp in revoked:
            self.processed.pop(tp, None)
            self.committed.pop(tp, None)
        self.assigned -= revoked
        self.restored -= revoked
        self._generation += 1
        log.info("partitions revoked", extra=_described(revoked))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.stage.drop(assigned)  # restored from history before their first batch
        self.restored -= assigned
        self.assigned |= assigned
        self._generation += 1
        log.info("partitions assigned", extra=_described(assigned))

    # -- the loop --------------------------------------------------------------
    def run(self) -> None:
        self.subscribe()
        try:
            while not self.shutdown.requested:
                try:
                    self.step()
                except Rewind as exc:
                    self.rewind(str(exc))
                except KafkaError as exc:
                    self.stats.last_error = repr(exc)
                    log.warning("Kafka error; retrying", extra={"error": repr(exc)})
                    self.shutdown.wait(self.config.error_pause_s)
        except Interrupted:
            pass
        self.close()

    def step(self) -> int:
        """Poll a batch, process it, produce its output; settle the batches whose
        output is acknowledged, flush the sinks that are due, commit what is
        durable. Returns the records polled."""
        batch = self._collect()
        self.stats.last_loop_at = self._clock()
        if batch:
            self._restore(batch)
            output = self.stage.process(batch)
            progress = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            self._in_flight.append(
                _Pending(self._generation, progress, output, self._send(output)))
        self._settle(wait=len(self._in_flight) > self.config.max_in_flight)
        self._flush_and_commit()
        self._update_lag()
        return sum(len(r) for r in batch.values())

    def _collect(self) -> dict[TopicPartition, list[Record]]:
        """Up to ``max_records`` records of assigned partitions: one poll, then
        more until the batch is full or ``linger_ms`` has passed since its first
        record."""
        size, linger_s = self.config.max_records, self.config.linger_ms / 1000.0
        batch: dict[TopicPartition, list[Record]] = {}
        count = 0
        deadline: float | None = None
        while not self.shutdown.requested:
            timeout_ms = self.config.poll_timeout_ms if deadline is None \
                else max(0, int((deadline - self._clock()) * 1000))
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=size - count)
            for tp, records in polled.items():
                if records and tp in self.assigned:
                    batch.setdefault(tp, []).extend(records)
                    count += len(records)
            if not count or not linger_s:
                break
            if deadline is None:
                deadline = self._clock() + linger_s
            if count >= size or self._clock() >= deadline:
                break
        self.stats.records += count
        return batch

    def _restore(self, batch: Batch) -> None:
        for tp, records in batch.items():
            if tp in self.restored:
                continue
            started = self._clock()
            try:
                done = self.stage.restore(tp, records, self.history)  # type: ignore[arg-type]
            except (KafkaError, TimeoutError, OSError) as exc:
                raise Rewind(f"restoring partition {tp.partition}: {exc!r}") from exc
            if done:
                self.restored.add(tp)
                self.stats.restores += 1
                log.info("partition state restored", extra={
                    "topic": tp.topic, "partition": tp.partition,
                    "seconds": round(self._clock() - started, 3)})

    def _send(self, output: Output) -> list[Any]:
        send = self.producer.send
        futures = [send(topic, key=key, value=value) for topic, key, value in output.produce]
        for record, reason in output.dead:
            futures.append(self.dead_letters.send(
                record.topic, record.value or b"", reason, key=record.key,
                extra_headers={"source_offset": f"{record.partition}:{record.offset}"}))
            log.warning("dead-lettered a record", extra={
                "topic": record.topic, "partition": record.partition, "offset": record.offset,
                "reason": reason[:200]})
        return futures

    def _settle(self, wait: bool) -> None:
        """Account for the oldest batches whose output is all acknowledged; with
        ``wait``, flush the producer first so that every batch is."""
        if wait and self._in_flight:
            try:
                self.producer.flush(timeout=self.config.produce_timeout_s)
            except KafkaError as exc:
                raise Rewind(f"flush: {exc!r}") from exc
        while self._in_flight:
            pending = self._in_flight[0]
            if not pending.acknowledged():
                if wait:
                    raise Rewind("output not acknowledged in time")
                return
            failed = [f for f in pending.futures if f.failed()]
            if failed:
                raise Rewind(f"{len(failed)} of {len(pending.futures)} records failed: "
                             f"{failed[0].exception!r}")
            self._in_flight.popleft()
            if pending.generation == self._generation:  # else: revoked meanwhile
                self.processed.update(pending.progress)
            output = pending.output
            self.stats.produced += len(output.produce)
            self.stats.dead_lettered += len(output.dead)
            self.stage.settled(output)
            if output.items:
                for sink in self.sinks:
                    sink.add(output.items)

    def _flush_and_commit(self, force: bool = False) -> None:
        for sink in self.sinks:
            if len(sink) and (force or sink.due()):
                self._flush(sink)
        if any(len(sink) for sink in self.sinks):
            return  # output not durable yet: its offsets wait
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in list(self.processed.items())
                   if tp in self.assigned and self.committed.get(tp) != off}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets)
        except (CommitFailedError, KafkaError) as exc:  # rebalancing: records replay later
            self.stats.commit_failures += 1
            log.warning("offset commit failed", extra={"error": repr(exc)})
            return
        for tp, meta in offsets.items():
            self.committed[tp] = meta.offset

    def _flush(self, sink: Sink) -> None:
        """Flush ``sink``, waiting and trying again until it works; raises
        :class:`Interrupted` when shutdown is requested meanwhile."""
        while True:
            try:
                sink.flush()
                self.backoff.reset()
                return
            except Retry as exc:
                delay = exc.after_s
                if delay is None:
                    delay = self._failed(sink, str(exc))
            except Exception as exc:  # disk full, a dependency down: keep the output, retry
                delay = self._failed(sink, repr(exc))
            if not self.wait(delay):
                self._interrupted = True
                raise Interrupted

    def _failed(self, sink: Sink, reason: str) -> float:
        delay = self.backoff.delay()
        self.stats.sink_retries += 1
        self.stats.last_error = reason[:300]
        log.warning("output not durable yet; retrying", extra={
            "sink": type(sink).__name__, "reason": reason[:300], "attempt": self.backoff.attempt,
            "retry_in_s": round(delay, 3)})
        return delay

    def wait(self, seconds: float) -> bool:
        """Wait without leaving the consumer group: partitions are paused and
        polled, so the group does not see a stuck member during long waits;
        anything a poll still returns is put back (seek), never dropped. False
        when shutdown was requested."""
        end = self._clock() + max(0.0, seconds)
        consumer = self.consumer
        try:
            while not self.shutdown.requested:
                self.stats.last_loop_at = self._clock()  # waiting is not stalling
                remaining = end - self._clock()
                if remaining <= 0:
                    return True
                unpaused = set(consumer.assignment()) - set(consumer.paused())
                if unpaused:
                    consumer.pause(*unpaused)
                polled = consumer.poll(timeout_ms=max(1, int(min(remaining, 0.5) * 1000)))
                for tp, records in polled.items():
                    if records:
                        consumer.seek(tp, records[0].offset)
            return False
        finally:
            paused = list(consumer.paused())
            if paused:
                consumer.resume(*paused)

    def rewind(self, reason: str) -> None:
        """Output of a batch was not acknowledged: make durable and commit what
        was, then go back to it and restore every partition's state from there."""
        self.stats.rewinds += 1
        self.stats.last_error = reason
        log.error("output failed; replaying from the last acknowledged offsets",
                  extra={"error": reason})
        self._in_flight.clear()  # processed again below; their output may appear twice
        self.shutdown.wait(self.config.error_pause_s)
        try:
            self._flush_and_commit(force=True)
            self.stage.drop(set(self.assigned))
            self.restored.clear()
            for tp in list(self.assigned):
                offset = self.processed.get(tp)
                if offset is None:
                    offset = self.consumer.committed(tp)
                if offset is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, offset)
        except KafkaError as exc:
            log.warning("could not rewind; retrying", extra={"error": repr(exc)})

    def _update_lag(self) -> None:
        now = self._clock()
        if self.lag_gauge is None or now < self._next_lag_at:
            return
        self._next_lag_at = now + self.config.lag_interval_s
        try:
            assigned = list(self.assigned)
            ends = self.consumer.end_offsets(assigned) if assigned else {}
            seen = set()
            for tp in assigned:
                position = self.processed.get(tp)
                if position is None:
                    position = self.consumer.position(tp)
                end = ends.get(tp)
                if position is None or end is None:
                    continue
                labels = (tp.topic, str(tp.partition)) if self.lag_by_topic \
                    else (str(tp.partition),)
                self.lag_gauge.labels(*labels).set(max(0, end - position))
                seen.add(labels)
            for gone in self._lag_partitions - seen:
                self.lag_gauge.remove(*gone)
            self._lag_partitions = seen
        except (KafkaError, KeyError, ValueError, TypeError) as exc:
            log.debug("lag not updated", extra={"error": repr(exc)})

    def close(self) -> None:
        """Settle what is in flight, flush the sinks and commit what is durable.
        After shutdown interrupted a sink that could not write, nothing more is
        tried: those records are read again on restart."""
        try:
            self._settle(wait=True)
        except Rewind as exc:
            log.warning("output unacknowledged at shutdown", extra={"error": str(exc)})
        if self._interrupted:
            log.warning("stopping with output not yet durable; it is redone on restart")
            return
        try:
            self._flush_and_commit(force=True)
        except Interrupted:
            log.warning("stopping with output not yet durable; it is redone on restart")

    def health(self) -> tuple[bool, dict[str, Any]]:
        age = self._clock() - self.stats.last_loop_at
        stats = self.stats
        ok = age < self.config.stall_s
        details: dict[str, Any] = {
            "loop_age_s": round(age, 3),
            "loop_stalled": not ok,
            "partitions": sorted(tp.partition for tp in list(self.assigned)),
            "records_consumed": stats.records,
            "records_produced": stats.produced,
            "dead_lettered": stats.dead_lettered,
            "state_rebuilds": stats.restores,
            "produce_failures": stats.rewinds,
            "commit_failures": stats.commit_failures,
            "sink_retries": stats.sink_retries,
            "last_error": stats.last_error,
        }
        for part in (self.stage, *self.sinks):
            check = getattr(part, "health", None)
            if check is not None:
                part_ok, part_details = check()
                ok = ok and part_ok
                details.update(part_details)
        return ok, details


def _described(partitions: Collection[TopicPartition]) -> dict[str, list]:
    return {"partitions": sorted({tp.partition for tp in partitions}),
            "topics": sorted({tp.topic for tp in partitions})}
