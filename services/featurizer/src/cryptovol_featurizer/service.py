"""The featurizer loop: ticks.raw -> window state -> ticks.features (+ Parquet).

Per polled batch: parse each tick (malformed ones are dead-lettered), update
the window state of its partition and produce the rows to emit. Once every
produced row and dead letter of a batch is acknowledged, its rows go to the
Parquet sink and its offsets become committable; they are committed then (with
the sink enabled, once the rows are in a file). A few batches may wait for
acknowledgements while later ones are processed. After a crash, rows after the last commit
are produced again, identical, with the same ``record_id``.

Window state is kept per partition. A partition gained in a rebalance (or after
a failed produce) is rebuilt from a read-back before its first record is
processed (see :mod:`cryptovol_featurizer.rebuild`), so the rows do not depend
on how many replicas ran or when they restarted.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata, TopicPartition

from cryptovol.core.codec import DecodeError, decode_tick, encode_row
from cryptovol.core.features import FeatureEngine, StepResult
from cryptovol.core.features.engine import DUPLICATE, LATE, MALFORMED, OUT_OF_ORDER
from cryptovol.core.ticks import Tick
from cryptovol.runtime.kafka import DeadLetter
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.logs import get_logger
from cryptovol_featurizer import metrics
from cryptovol_featurizer.rebuild import ReadBack
from cryptovol_featurizer.settings import FeaturizerSettings
from cryptovol_featurizer.sink import ParquetSink

log = get_logger(__name__)


MAX_IN_FLIGHT = 4  # polled batches waiting for acknowledgements at most


class ProduceFailed(RuntimeError):
    """Some rows of a batch were not acknowledged; the batch is not committed."""


class Throttle:
    """Which accepted ticks become rows: every one (``interval_ms = 0``), or the
    first tick of each ``interval_ms`` bucket of event time per product. Depends
    only on the previous accepted tick, so a rebuilt state throttles the same."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_us = interval_ms * 1000
        self._bucket: dict[str, int] = {}

    def emit(self, product_id: str, time_us: int) -> bool:
        if not self.interval_us:
            return True
        bucket = time_us // self.interval_us
        if self._bucket.get(product_id) == bucket:
            return False
        self._bucket[product_id] = bucket
        return True


@dataclass
class PartitionState:
    engine: FeatureEngine
    throttle: Throttle

    def feed(self, tick: Tick) -> StepResult | None:
        res = self.engine.step(tick)
        if res is not None and self.throttle.emit(tick.product_id, res.time_us):
            return res
        return None


@dataclass
class _Batch:
    """One polled batch between producing its rows and committing its offsets."""

    generation: int = 0  # of the assignment it was polled under
    progress: dict[TopicPartition, int] = field(default_factory=dict)  # next offsets
    futures: list[Any] = field(default_factory=list)
    emitted: list[tuple[Tick, StepResult]] = field(default_factory=list)
    consumed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    out_of_order: Counter[str] = field(default_factory=Counter)
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
    """Counts for /health (the Prometheus metrics carry the rates)."""

    last_loop_at: float  # on the service's own clock, never the real one
    consumed: int = 0
    emitted: int = 0
    dead_lettered: int = 0
    rebuilds: int = 0
    produce_failures: int = 0
    commit_failures: int = 0
    last_commit_at: float | None = None
    last_error: str | None = None


class Featurizer:
    def __init__(
        self,
        settings: FeaturizerSettings,
        consumer: Any,
        producer: Any,
        reader: Any,
        shutdown: Shutdown,
        sink: ParquetSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.dead_letters = DeadLetter(producer)
        self.read_back = ReadBack(reader)
        self.shutdown = shutdown
        self.sink = sink
        self._clock = clock
        self.config = settings.feature_config()
        self.lookback_s = self.config.rebuild_lookback_s + settings.rebuild_margin_s
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self.assigned: set[TopicPartition] = set()
        self.processed: dict[TopicPartition, int] = {}  # next offset; its rows acknowledged
        self.committed: dict[TopicPartition, int] = {}
        self.stats = Stats(last_loop_at=clock())
        self._next_lag_at = 0.0
        self._routes: dict[str, tuple[bytes, int]] = {}
        self._in_flight: deque[_Batch] = deque()
        self._generation = 0

    # -- group membership ------------------------------------------------------
    def subscribe(self) -> None:
        featurizer = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # type: ignore[no-untyped-def]
                featurizer._on_revoked(set(revoked))

            def on_partitions_assigned(self, assigned):  # type: ignore[no-untyped-def]
                featurizer._on_assigned(set(assigned))

        self.consumer.subscribe([self.settings.topic_raw], listener=Listener())

    # The client runs these callbacks on its network thread, where blocking calls
    # (commit, flush) are refused: they only mark state. Rows settled later for a
    # partition that was revoked meanwhile still count and reach the sink, but
    # their offsets are left to the partition's next owner, which replays them
    # (at least once: identical rows, same record ids).
    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.partitions.pop(tp, None)
            self.processed.pop(tp, None)
            self.committed.pop(tp, None)
        self.assigned -= revoked
        self._generation += 1
        log.info("partitions revoked", extra={"partitions": sorted(p.partition for p in revoked)})

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._routes.clear()  # partition counts may have changed
        for tp in assigned:  # rebuilt lazily, from the first record this replica sees
            self.partitions.pop(tp, None)
        self.assigned |= assigned
        self._generation += 1
        log.info("partitions assigned",
                 extra={"partitions": sorted(p.partition for p in assigned)})

    # -- the loop --------------------------------------------------------------
    def run(self) -> None:
        self.subscribe()
        while not self.shutdown.requested:
            try:
                self.step()
            except ProduceFailed as exc:
                self._recover(str(exc))
            except KafkaError as exc:
                self.stats.last_error = repr(exc)
                log.warning("Kafka error; retrying", extra={"error": repr(exc)})
                self.shutdown.wait(1.0)
        self.close()

    def step(self) -> int:
        """Poll once, process the batch, produce its rows; settle the batches whose
        rows are all acknowledged (metrics, Parquet, offsets). Up to
        ``MAX_IN_FLIGHT`` batches wait for acknowledgements while later ones are
        processed, so the broker's round trip does not stall the loop. Returns the
        records polled."""
        batch = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms,
                                   max_records=self.settings.poll_max_records)
        self.stats.last_loop_at = self._clock()
        pending = _Batch(generation=self._generation)
        futures, emitted = pending.futures, pending.emitted
        dropped, out_of_order, consumed = pending.dropped, pending.out_of_order, pending.consumed
        topic_out = self.settings.topic_features
        send = self.producer.send
        for tp, records in batch.items():
            if tp not in self.assigned:
                continue
            state = self.partitions.get(tp)
            for record in records:
                try:
                    tick = decode_tick(record.value)
                except DecodeError as exc:
                    futures.append(self._dead_letter(record, str(exc)))
                    dropped[MALFORMED] += 1
                    continue
                if state is None:  # first tick since the partition was gained
                    state = self._rebuild(tp, record, tick)
                consumed[tick.product_id] += 1
                res = state.feed(tick)
                outcome = state.engine.last_outcome
                if outcome in (DUPLICATE, LATE):
                    dropped[outcome] += 1
                elif outcome == MALFORMED:
                    futures.append(self._dead_letter(record, "price is not a positive number"))
                    dropped[MALFORMED] += 1
                elif outcome == OUT_OF_ORDER:
                    out_of_order[tick.product_id] += 1
                if res is not None:
                    key, partition = self._route(tick.product_id)
                    futures.append(send(topic_out, key=key, value=encode_row(tick, res),
                                        partition=partition))
                    emitted.append((tick, res))
            pending.progress[tp] = records[-1].offset + 1
        if pending.progress:
            self._in_flight.append(pending)
        self._settle(wait=len(self._in_flight) > MAX_IN_FLIGHT)
        self._flush_sink_and_commit()
        self._update_lag()
        return sum(len(r) for r in batch.values())

    def _settle(self, wait: bool) -> None:
        """Account for the oldest batches whose rows are all acknowledged; with
        ``wait``, flush the producer first so that every batch is."""
        if wait and self._in_flight:
            try:
                self.producer.flush(timeout=self.settings.produce_timeout_s)
            except KafkaError as exc:
                raise ProduceFailed(f"flush: {exc!r}") from exc
        while self._in_flight:
            pending = self._in_flight[0]
            if not pending.acknowledged():
                if wait:
                    raise ProduceFailed("not acknowledged in time")
                return
            failed = [f for f in pending.futures if f.failed()]
            if failed:
                raise ProduceFailed(f"{len(failed)} of {len(pending.futures)} records failed: "
                                    f"{failed[0].exception!r}")
            self._in_flight.popleft()
            if pending.generation == self._generation:  # else: revoked meanwhile
                self.processed.update(pending.progress)
            self._account(pending)
            if self.sink is not None:
                self.sink.add(pending.emitted)

    # -- pieces ----------------------------------------------------------------
    def _route(self, product_id: str) -> tuple[bytes, int]:
        """Key and partition of a product's rows: what the default partitioner
        computes for the key, cached (its pure-Python murmur2 costs more than the
        rest of a send)."""
        route = self._routes.get(product_id)
        if route is None:
            key = product_id.encode()
            partitions = sorted(self.producer.partitions_for(self.settings.topic_features))
            route = (key, partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)])
            self._routes[product_id] = route
        return route

    def _rebuild(self, tp: TopicPartition, first: Any, tick: Tick) -> PartitionState:
        started = self._clock()
        state = PartitionState(FeatureEngine(self.config), Throttle(self.settings.emit_interval_ms))
        target = tick.event_us - round(self.lookback_s * 1e6)
        start = self.read_back.start_offset(tp, first.offset, first.timestamp, target,
                                            self.lookback_s)
        fed = self.read_back.replay(tp, start, first.offset, state.feed)
        self.partitions[tp] = state
        elapsed = self._clock() - started
        metrics.STATE_REBUILD.observe(elapsed)
        self.stats.rebuilds += 1
        log.info("window state rebuilt", extra={
            "partition": tp.partition, "from_offset": start, "to_offset": first.offset,
            "ticks": fed, "seconds": round(elapsed, 3)})
        return state

    def _dead_letter(self, record: Any, reason: str) -> Any:
        """Dead-letter a malformed tick; the batch is committed only once the
        returned send is acknowledged."""
        self.stats.dead_lettered += 1
        log.warning("dead-lettered a malformed tick", extra={
            "partition": record.partition, "offset": record.offset, "reason": reason[:200]})
        return self.dead_letters.send(
            self.settings.topic_raw, record.value or b"", reason, key=record.key,
            extra_headers={"source_offset": f"{record.partition}:{record.offset}"})

    def _account(self, pending: _Batch) -> None:
        now_us = time.time() * 1e6
        per_product: Counter[str] = Counter()
        observe = metrics.PROCESSING_LAG.observe
        for tick, _res in pending.emitted:
            per_product[tick.product_id] += 1
            observe(max(0.0, (now_us - tick.event_us) / 1e6))
        for product, n in per_product.items():
            metrics.ROWS_EMITTED.labels(product).inc(n)
        for product, n in pending.consumed.items():
            metrics.TICKS_CONSUMED.labels(product).inc(n)
        for reason, n in pending.dropped.items():
            metrics.TICKS_DROPPED.labels(reason).inc(n)
        for product, n in pending.out_of_order.items():
            metrics.OUT_OF_ORDER.labels(product).inc(n)
        self.stats.consumed += sum(pending.consumed.values())
        self.stats.emitted += len(pending.emitted)

    def _flush_sink_and_commit(self, force: bool = False) -> None:
        if self.sink is not None:
            if not (force or self.sink.due()):
                return
            if len(self.sink):
                self.sink.flush()
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in list(self.processed.items())
                   if tp in self.assigned and self.committed.get(tp) != off}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets)
        except (CommitFailedError, KafkaError) as exc:  # rebalancing: rows replay later
            self.stats.commit_failures += 1
            log.warning("offset commit failed", extra={"error": repr(exc)})
            return
        for tp, meta in offsets.items():
            self.committed[tp] = meta.offset
        self.stats.last_commit_at = self._clock()

    def _recover(self, reason: str) -> None:
        """Rows of a batch were not acknowledged: commit what was, go back to it,
        and rebuild the window state from there."""
        self.stats.produce_failures += 1
        self.stats.last_error = reason
        log.error("produce failed; replaying from the last acknowledged offsets",
                  extra={"error": reason})
        self._in_flight.clear()  # replayed below; their rows may appear twice
        self.shutdown.wait(1.0)
        try:
            self._flush_sink_and_commit(force=True)
            for tp in list(self.assigned):
                self.partitions.pop(tp, None)
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
        if now < self._next_lag_at or not self.assigned:
            return
        self._next_lag_at = now + self.settings.lag_interval_s
        try:
            ends = self.consumer.end_offsets(list(self.assigned))
            for tp, end in ends.items():
                position = self.processed.get(tp)
                if position is None:
                    position = self.consumer.position(tp)
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, end - position))
        except KafkaError as exc:
            log.debug("lag update failed", extra={"error": repr(exc)})

    def close(self) -> None:
        try:
            self._settle(wait=True)
        except ProduceFailed as exc:
            log.warning("rows unacknowledged at shutdown", extra={"error": str(exc)})
        self._flush_sink_and_commit(force=True)

    def health(self) -> tuple[bool, dict]:
        age = self._clock() - self.stats.last_loop_at
        ok = age < self.settings.stall_s
        return ok, {
            "loop_age_s": round(age, 3),
            "partitions": sorted(tp.partition for tp in list(self.assigned)),
            "products": sorted({p for s in list(self.partitions.values())
                                for p in s.engine.products()}),
            "ticks_consumed": self.stats.consumed,
            "rows_emitted": self.stats.emitted,
            "dead_lettered": self.stats.dead_lettered,
            "state_rebuilds": self.stats.rebuilds,
            "produce_failures": self.stats.produce_failures,
            "commit_failures": self.stats.commit_failures,
            "last_error": self.stats.last_error,
            "parquet_files": self.sink.files_written if self.sink else None,
        }
