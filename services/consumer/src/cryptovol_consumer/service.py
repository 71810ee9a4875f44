"""The consumer loop: read feature rows, score them in micro-batches through
the API, record the predictions, then commit the offsets.

Offsets are committed only after a batch's predictions are recorded (and its
dead letters acknowledged), so while the API is away rows wait in Kafka and
nothing is lost; after a crash or rebalance some rows may be predicted twice
(their ``record_id`` identifies them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from cryptovol.core.codec import DecodeError, decode_row, encode_record
from cryptovol.core.schemas import FeatureRow, PredictionRecord
from cryptovol.core.timestamps import format_micros, from_micros, now_micros, to_micros
from cryptovol.runtime.kafka import DeadLetter
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.logs import get_logger
from cryptovol_consumer import metrics
from cryptovol_consumer.breaker import BreakerState, CircuitBreaker
from cryptovol_consumer.client import ApiError, PredictClient, PredictResult
from cryptovol_consumer.pacing import RateLimiter, backoff_delay
from cryptovol_consumer.rows import request_features
from cryptovol_consumer.settings import ConsumerSettings
from cryptovol_consumer.sink import PredictionSink

log = get_logger(__name__)


class Interrupted(Exception):
    """Shutdown was requested while a batch was in flight; it is not committed."""


@dataclass
class Stats:
    """Counts for /health (the Prometheus metrics carry the rates)."""

    last_loop_at: float  # on the service's own clock, never the real one
    predicted: int = 0
    skipped_warmup: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commit_failures: int = 0
    last_prediction_at: str | None = None


class PredictionService:
    def __init__(
        self,
        settings: ConsumerSettings,
        consumer: Any,
        producer: Any,
        client: PredictClient,
        sink: PredictionSink,
        shutdown: Shutdown,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.dead_letter = DeadLetter(producer)
        self.client = client
        self.sink = sink
        self.shutdown = shutdown
        self._clock = clock
        self.breaker = CircuitBreaker(
            settings.breaker_failures,
            settings.breaker_reset_s,
            clock=clock,
            on_change=self._breaker_changed,
        )
        metrics.BREAKER_STATE.set(int(self.breaker.state))
        self.limiter = RateLimiter(
            settings.rate_limit_rps, burst=max(1.0, settings.rate_limit_rps / 10), clock=clock,
            sleep=self._sleep,
        )  # fmt: skip
        self.stats = Stats(last_loop_at=clock())
        self._next_lag_at = 0.0
        self._lag_partitions: set[int] = set()

    # -- lifecycle ------------------------------------------------------------

    def run(self) -> None:
        log.info(
            "consuming",
            extra={"topic": self.settings.topic_features, "api_url": self.settings.api_url},
        )
        while not self.shutdown.requested:
            self.stats.last_loop_at = self._clock()
            batch = self._collect()
            if batch:
                try:
                    self.process(batch)
                except Interrupted:
                    break
            self._update_lag()

    def health(self) -> tuple[bool, dict[str, Any]]:
        stalled = self._clock() - self.stats.last_loop_at > max(
            60.0, 3 * self.settings.api_timeout_s
        )
        state = self.breaker.state
        ok = not stalled and state is not BreakerState.OPEN
        return ok, {
            "breaker": state.name.lower(),
            "loop_stalled": stalled,
            "api_url": self.settings.api_url,
            "predicted": self.stats.predicted,
            "skipped_warmup": self.stats.skipped_warmup,
            "dead_lettered": self.stats.dead_lettered,
            "commit_failures": self.stats.commit_failures,
            "last_prediction_at": self.stats.last_prediction_at,
        }

    # -- batching -------------------------------------------------------------

    def _collect(self) -> list[Any]:
        """Up to ``batch_size`` records: return when full, when ``batch_linger_ms``
        has passed since the first record, or after one idle poll."""
        size = self.settings.batch_size
        linger_s = self.settings.batch_linger_ms / 1000.0
        pending: list[Any] = []
        deadline: float | None = None
        while not self.shutdown.requested:
            idle = deadline is None
            timeout_ms = 500 if idle else max(0, int((deadline - self._clock()) * 1000))
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=size - len(pending))
            for records in polled.values():
                pending.extend(records)
            if not pending:
                return pending
            if deadline is None:
                deadline = self._clock() + linger_s
            if len(pending) >= size or self._clock() >= deadline:
                break
        return pending

    def process(self, messages: Sequence[Any]) -> None:
        """Score, record and commit one batch of consumer records."""
        rows: list[FeatureRow] = []
        dead = False
        for msg in messages:
            try:
                row = decode_row(msg.value)
            except DecodeError as exc:
                self._dead_letter(msg.value or b"", str(exc), msg.key)
                dead = True
                continue
            if row.warmup and not self.settings.predict_warmup:
                self.stats.skipped_warmup += 1
                metrics.ROWS_SKIPPED.labels(reason="warmup").inc()
                continue
            rows.append(row)

        if rows:
            scored = self._predict(rows)
            records = [self._record(row, result, i) for row, result, i in scored]
            self._store(records)
            dead = dead or len(scored) < len(rows)
            self._count(records)
        if dead:
            self._flush_dead_letters()
        self._commit(messages)
        self.stats.batches += 1

    # -- prediction with retries, breaker and bad-row isolation ---------------

    def _predict(self, rows: list[FeatureRow]) -> list[tuple[FeatureRow, PredictResult, int]]:
        """(row, result, index into result) for every row the API accepts; rows the
        API rejects as invalid are dead-lettered (after splitting the batch to find them)."""
        try:
            result = self._call(rows)
        except ApiError as exc:  # only non-retryable 4xx get here
            if len(rows) == 1:
                self._dead_letter(
                    encode_record(rows[0]),
                    f"rejected by /predict: {exc}",
                    rows[0].product_id,
                )
                return []
            mid = len(rows) // 2
            return self._predict(rows[:mid]) + self._predict(rows[mid:])
        return [(row, result, i) for i, row in enumerate(rows)]

    def _call(self, rows: list[FeatureRow]) -> PredictResult:
        payload = [request_features(r) for r in rows]
        event_times = [format_micros(to_micros(r.event_time)) for r in rows]
        attempt = 0
        while True:
            if self.shutdown.requested:
                raise Interrupted
            if not self.breaker.allow():
                self._sleep(self.breaker.retry_in())
                continue
            self.limiter.acquire()
            try:
                result = self.client.predict(payload, event_times)
            except ApiError as exc:
                metrics.API_ERRORS.labels(exc.reason).inc()
                if not exc.retryable:
                    self.breaker.record_success()  # the API answers; the request is at fault
                    raise
                self.breaker.record_failure()
                delay = backoff_delay(
                    attempt, self.settings.retry_base_s, self.settings.retry_max_s
                )
                attempt += 1
                log.warning(
                    "/predict failed; retrying",
                    extra={
                        "reason": exc.reason,
                        "error": str(exc)[:300],
                        "attempt": attempt,
                        "retry_in_s": round(delay, 3),
                        "breaker": self.breaker.state.name.lower(),
                    },
                )
                self._sleep(delay)
                continue
            self.breaker.record_success()
            return result

    def _breaker_changed(self, state: BreakerState) -> None:
        metrics.BREAKER_STATE.set(int(state))
        log.warning("circuit breaker " + state.name.lower(), extra={"breaker": int(state)})

    # -- recording ------------------------------------------------------------

    def _record(self, row: FeatureRow, result: PredictResult, i: int) -> PredictionRecord:
        now = now_micros()
        return PredictionRecord(
            record_id=row.record_id,
            product_id=row.product_id,
            event_time=row.event_time,
            predicted_time=from_micros(now),
            score=result.scores[i],
            spike=result.spikes[i],
            threshold=result.threshold,
            model_variant=result.model_variant,  # type: ignore[arg-type]
            model_version=result.model_version,
            api_latency_ms=round(result.latency_ms, 3),
            e2e_latency_ms=round((now - to_micros(row.event_time)) / 1000, 3),
        )

    def _store(self, records: list[PredictionRecord]) -> None:
        """Record durably, retrying (with backoff) until it works or shutdown."""
        attempt = 0
        while True:
            try:
                self.sink.write(records)
                return
            except Exception as exc:  # even the file fallback failed (disk full, ...)
                delay = backoff_delay(
                    attempt, self.settings.retry_base_s, self.settings.retry_max_s
                )
                attempt += 1
                log.error(
                    "cannot record predictions; retrying",
                    extra={"error": repr(exc), "retry_in_s": round(delay, 3)},
                )
                if self.shutdown.requested:
                    raise Interrupted from exc
                self._sleep(delay)

    def _count(self, records: list[PredictionRecord]) -> None:
        if not records:
            return
        by_model: dict[tuple[str, str], list[int]] = {}
        for r in records:
            counts = by_model.setdefault((r.model_variant, r.model_version), [0, 0])
            counts[0] += 1
            counts[1] += int(r.spike)
            metrics.E2E_LATENCY.observe(max(0.0, r.e2e_latency_ms / 1000.0))
        for (variant, version), (n, spikes) in by_model.items():
            metrics.PREDICTIONS.labels(variant, version).inc(n)
            # inc(0) too: the series exists from the first prediction, so spike-rate
            # queries and alerts read 0 rather than nothing while no spike occurs
            metrics.SPIKES.labels(variant, version).inc(spikes)
        newest = max(records, key=lambda r: r.predicted_time).predicted_time
        metrics.LAST_PREDICTION.set(to_micros(newest) / 1e6)
        self.stats.predicted += len(records)
        self.stats.last_prediction_at = format_micros(to_micros(newest))

    def _dead_letter(self, raw: bytes, reason: str, key: bytes | str | None) -> None:
        self.stats.dead_lettered += 1
        metrics.ROWS_SKIPPED.labels(reason="dead_letter").inc()
        log.warning("dead-lettering feature row", extra={"reason": reason[:300]})
        self.dead_letter.send(self.settings.topic_features, raw, reason, key=key)

    def _flush_dead_letters(self) -> None:
        attempt = 0
        while True:
            try:
                self.producer.flush(timeout=self.settings.produce_timeout_s)
                return
            except KafkaError as exc:
                if self.shutdown.requested:
                    raise Interrupted from exc
                delay = backoff_delay(
                    attempt, self.settings.retry_base_s, self.settings.retry_max_s
                )
                attempt += 1
                log.error("dead letters not acknowledged; retrying", extra={"error": repr(exc)})
                self._sleep(delay)

    # -- offsets and lag ------------------------------------------------------

    def _commit(self, messages: Sequence[Any]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for msg in messages:
            tp = TopicPartition(msg.topic, msg.partition)
            offsets[tp] = max(offsets.get(tp, -1), msg.offset + 1)
        owned = self.consumer.assignment()
        commit = {
            tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items() if tp in owned
        }
        if not commit:
            return
        try:
            self.consumer.commit(commit)
        except KafkaError as exc:  # rebalance: another member re-reads them (duplicates, no loss)
            self.stats.commit_failures += 1
            log.warning("offset commit failed", extra={"error": repr(exc)})

    def _update_lag(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now < self._next_lag_at:
            return
        self._next_lag_at = now + self.settings.lag_interval_s
        try:
            assigned = list(self.consumer.assignment())
            ends = self.consumer.end_offsets(assigned) if assigned else {}
            seen = set()
            for tp in assigned:
                position = self.consumer.position(tp, timeout_ms=1000)
                end = ends.get(tp)
                if position is None or end is None:
                    continue
                metrics.LAG.labels(str(tp.partition)).set(max(0, end - position))
                seen.add(tp.partition)
            for gone in self._lag_partitions - seen:
                metrics.LAG.remove(str(gone))
            self._lag_partitions = seen
        except (KafkaError, KeyError, ValueError, TypeError) as exc:
            log.debug("lag not updated", extra={"error": repr(exc)})

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.settings.retry_base_s, self.settings.retry_max_s)

    def _sleep(self, seconds: float) -> None:
        """Wait without leaving the consumer group: partitions are paused and
        polled, so the group does not see a stuck member during long outages.
        Anything a poll still returns is put back (seek), never dropped."""
        end = self._clock() + max(0.0, seconds)
        try:
            while not self.shutdown.requested:
                self.stats.last_loop_at = self._clock()  # waiting is not stalling
                remaining = end - self._clock()
                if remaining <= 0:
                    break
                unpaused = set(self.consumer.assignment()) - set(self.consumer.paused())
                if unpaused:
                    self.consumer.pause(*unpaused)
                polled = self.consumer.poll(timeout_ms=max(1, int(min(remaining, 0.5) * 1000)))
                for tp, records in polled.items():
                    if records:
                        self.consumer.seek(tp, records[0].offset)
        finally:
            paused = list(self.consumer.paused())
            if paused:
                self.consumer.resume(*paused)
