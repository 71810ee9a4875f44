"""The featurizer loop: ticks.raw -> window state -> ticks.features (+ Parquet).

Per polled batch: parse each tick (malformed ones are dead-lettered), update
the window state of its partition, produce the rows to emit, wait for every
produced row and dead letter to be acknowledged, hand the rows to the Parquet
sink, and only then commit the batch's offsets (with the sink enabled, commits
wait for the rows to be in a file). After a crash, rows after the last commit
are produced again, identical, with the same ``record_id``.

Window state is kept per partition. A partition gained in a rebalance (or after
a failed produce) is rebuilt from a read-back before its first record is
processed (see :mod:`cryptovol_featurizer.rebuild`), so the rows do not depend
on how many replicas ran or when they restarted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from cryptovol.features import FeatureEngine, StepResult
from cryptovol.features.engine import DUPLICATE, LATE, MALFORMED, OUT_OF_ORDER
from cryptovol.kafka import DLQ_SUFFIX
from cryptovol.logs import get_logger
from cryptovol.obs import Shutdown
from cryptovol.schemas import format_ts, utc_now
from cryptovol_featurizer import metrics
from cryptovol_featurizer.codec import MalformedTick, TickIn, parse_tick, row_json
from cryptovol_featurizer.rebuild import ReadBack
from cryptovol_featurizer.settings import FeaturizerSettings
from cryptovol_featurizer.sink import ParquetSink

log = get_logger(__name__)


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

    def feed(self, tick: TickIn) -> StepResult | None:
        res = self.engine.step(tick.product_id, tick.record_id, tick.event_us, tick.price,
                               tick.best_bid, tick.best_ask, tick.bid_qty, tick.ask_qty,
                               tick.receive_us)
        if res is not None and self.throttle.emit(tick.product_id, res.time_us):
            return res
        return None


@dataclass
class Stats:
    """Counts for /health (the Prometheus metrics carry the rates)."""

    consumed: int = 0
    emitted: int = 0
    dead_lettered: int = 0
    rebuilds: int = 0
    produce_failures: int = 0
    commit_failures: int = 0
    last_loop_at: float = field(default_factory=time.monotonic)
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
        self.stats = Stats()
        self._next_lag_at = 0.0

    # -- group membership ------------------------------------------------------
    def subscribe(self) -> None:
        featurizer = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # type: ignore[no-untyped-def]
                featurizer._on_revoked(set(revoked))

            def on_partitions_assigned(self, assigned):  # type: ignore[no-untyped-def]
                featurizer._on_assigned(set(assigned))

        self.consumer.subscribe([self.settings.topic_raw], listener=Listener())

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # every polled batch is complete before the next poll, so only the sink
        # may still hold rows whose offsets are not committed
        self._flush_sink_and_commit(force=True)
        for tp in revoked:
            self.partitions.pop(tp, None)
            self.processed.pop(tp, None)
            self.committed.pop(tp, None)
        self.assigned -= revoked
        log.info("partitions revoked", extra={"partitions": sorted(p.partition for p in revoked)})

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:  # rebuilt lazily, from the first record this replica sees
            self.partitions.pop(tp, None)
        self.assigned |= assigned
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
        """Poll once and process the batch end to end; returns records handled."""
        batch = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms,
                                   max_records=self.settings.poll_max_records)
        self.stats.last_loop_at = self._clock()
        emitted: list[tuple[TickIn, StepResult]] = []
        futures: list[Any] = []
        consumed: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        out_of_order: Counter[str] = Counter()
        progress: dict[TopicPartition, int] = {}
        topic_out = self.settings.topic_features
        send = self.producer.send
        for tp, records in batch.items():
            if tp not in self.assigned:
                continue
            state = self.partitions.get(tp)
            for record in records:
                try:
                    tick = parse_tick(record.value)
                except MalformedTick as exc:
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
                    futures.append(send(topic_out, key=tick.product_id.encode(),
                                        value=row_json(tick, res)))
                    emitted.append((tick, res))
            progress[tp] = records[-1].offset + 1
        if progress:
            self._await_acks(futures)
            self.processed.update(progress)
            self._account(emitted, consumed, dropped, out_of_order)
            if self.sink is not None:
                self.sink.add(emitted)
        self._flush_sink_and_commit()
        self._update_lag()
        return sum(len(r) for r in batch.values())

    # -- pieces ----------------------------------------------------------------
    def _rebuild(self, tp: TopicPartition, first: Any, tick: TickIn) -> PartitionState:
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
        """Like :class:`cryptovol.kafka.DeadLetter`, but keeps the send's future so
        the batch is committed only once the dead letter is acknowledged."""
        self.stats.dead_lettered += 1
        log.warning("dead-lettered a malformed tick", extra={
            "partition": record.partition, "offset": record.offset, "reason": reason[:200]})
        headers = [
            ("reason", reason[:500].encode()),
            ("source_topic", self.settings.topic_raw.encode()),
            ("source_offset", f"{record.partition}:{record.offset}".encode()),
            ("failed_at", format_ts(utc_now()).encode()),
        ]
        return self.producer.send(self.settings.topic_raw + DLQ_SUFFIX, key=record.key,
                                  value=record.value or b"", headers=headers)

    def _await_acks(self, futures: list[Any]) -> None:
        try:
            self.producer.flush(timeout=self.settings.produce_timeout_s)
        except KafkaError as exc:
            raise ProduceFailed(f"flush: {exc!r}") from exc
        failed = [f for f in futures if not f.is_done or f.failed()]
        if failed:
            first = failed[0].exception if failed[0].is_done else "not acknowledged in time"
            raise ProduceFailed(f"{len(failed)} of {len(futures)} records failed: {first!r}")

    def _account(self, emitted: list[tuple[TickIn, StepResult]], consumed: Counter[str],
                 dropped: Counter[str], out_of_order: Counter[str]) -> None:
        now_us = time.time() * 1e6
        per_product: Counter[str] = Counter()
        observe = metrics.PROCESSING_LAG.observe
        for tick, _res in emitted:
            per_product[tick.product_id] += 1
            observe(max(0.0, (now_us - tick.event_us) / 1e6))
        for product, n in per_product.items():
            metrics.ROWS_EMITTED.labels(product).inc(n)
        for product, n in consumed.items():
            metrics.TICKS_CONSUMED.labels(product).inc(n)
        for reason, n in dropped.items():
            metrics.TICKS_DROPPED.labels(reason).inc(n)
        for product, n in out_of_order.items():
            metrics.OUT_OF_ORDER.labels(product).inc(n)
        self.stats.consumed += sum(consumed.values())
        self.stats.emitted += len(emitted)

    def _flush_sink_and_commit(self, force: bool = False) -> None:
        if self.sink is not None:
            if not (force or self.sink.due()):
                return
            if len(self.sink):
                self.sink.flush()
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self.processed.items()
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
        self.shutdown.wait(1.0)
        try:
            self._flush_sink_and_commit(force=True)
            for tp in self.assigned:
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
        self._flush_sink_and_commit(force=True)

    def health(self) -> tuple[bool, dict]:
        age = self._clock() - self.stats.last_loop_at
        ok = age < self.settings.stall_s
        return ok, {
            "loop_age_s": round(age, 3),
            "partitions": sorted(tp.partition for tp in self.assigned),
            "products": sorted({p for s in self.partitions.values() for p in s.engine.products()}),
            "ticks_consumed": self.stats.consumed,
            "rows_emitted": self.stats.emitted,
            "dead_lettered": self.stats.dead_lettered,
            "state_rebuilds": self.stats.rebuilds,
            "produce_failures": self.stats.produce_failures,
            "commit_failures": self.stats.commit_failures,
            "last_error": self.stats.last_error,
            "parquet_files": self.sink.files_written if self.sink else None,
        }
