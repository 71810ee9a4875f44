"""The consumer's sink on the stream worker: feature rows scored through the
prediction API, then recorded (``predictions.log``, or files when Kafka cannot
take them). :meth:`Predictor.flush` returns only once every row added is
recorded (or, if the API rejects it as invalid, dead-lettered), so the worker
commits a batch's offsets only after its predictions are durable: while the
API is away, rows wait in Kafka and nothing is lost.

Calls go through a circuit breaker and a rate limiter. A call that fails, an
open breaker or an exhausted rate budget raises :class:`Retry`: the worker
waits (backing off after failures) with consumption paused, and flushes again;
rows already recorded are not scored twice. Rows the API rejects (422/413) are
isolated by splitting the batch, and dead-lettered one by one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from kafka.errors import KafkaError

from cryptovol.core.codec import encode_record
from cryptovol.core.schemas import FeatureRow, PredictionRecord, ShadowScore
from cryptovol.core.timestamps import format_micros, from_micros, now_micros, to_micros
from cryptovol.runtime.kafka import DeadLetter
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.pacing import RateLimiter
from cryptovol.runtime.worker import Retry
from cryptovol_consumer import metrics
from cryptovol_consumer.breaker import BreakerState, CircuitBreaker
from cryptovol_consumer.client import ApiError, PredictClient, PredictResult
from cryptovol_consumer.rows import request_features
from cryptovol_consumer.sink import PredictionSink

log = get_logger(__name__)


class Predictor:
    def __init__(
        self,
        client: PredictClient,
        records: PredictionSink,
        dead_letters: DeadLetter,
        *,
        topic: str,
        breaker: CircuitBreaker,
        limiter: RateLimiter,
        produce_timeout_s: float = 10.0,
        wall_us: Callable[[], int] = now_micros,
    ) -> None:
        self.client = client
        self.records = records
        self.dead_letters = dead_letters
        self.topic = topic
        self.breaker = breaker
        self.limiter = limiter
        self.produce_timeout_s = produce_timeout_s
        self._wall_us = wall_us
        self._todo: deque[list[FeatureRow]] = deque()  # rows to score, a batch a list
        self._unrecorded: list[PredictionRecord] = []  # scored, not yet recorded
        self._dead_unflushed = False
        self.predicted = 0
        self.rejected = 0
        self.last_prediction_at: str | None = None

    # -- the sink protocol -----------------------------------------------------
    def add(self, rows: Sequence[FeatureRow]) -> None:
        if rows:
            self._todo.append(list(rows))

    def due(self) -> bool:
        return bool(self._todo or self._unrecorded or self._dead_unflushed)

    def __len__(self) -> int:
        return sum(map(len, self._todo)) + len(self._unrecorded) + self._dead_unflushed

    def flush(self) -> None:
        if self._unrecorded:
            self._record()
        while self._todo:
            rows = self._todo[0]
            result = self._score(rows)
            self._todo.popleft()
            if isinstance(result, ApiError):  # rejected as invalid: find the rows at fault
                if len(rows) == 1:
                    self._dead_letter(rows[0], f"rejected by /predict: {result}")
                else:
                    mid = len(rows) // 2
                    self._todo.extendleft([rows[mid:], rows[:mid]])
                continue
            now = self._wall_us()
            self._unrecorded = [self._prediction(row, result, i, now)
                                for i, row in enumerate(rows)]
            self._record()
        if self._dead_unflushed:
            try:
                self.dead_letters.producer.flush(timeout=self.produce_timeout_s)
            except KafkaError as exc:
                raise Retry(f"dead letters not acknowledged: {exc!r}") from exc
            self._dead_unflushed = False

    def close(self) -> None:
        self.client.close()

    # -- pieces ------------------------------------------------------------------
    def _score(self, rows: list[FeatureRow]) -> PredictResult | ApiError:
        """The API's answer for ``rows``, or its error when it rejects them as invalid."""
        if not self.breaker.allow():
            raise Retry("circuit breaker open", after_s=self.breaker.retry_in())
        if not self.limiter.try_acquire():
            raise Retry("rate limit", after_s=self.limiter.wait_time())
        payload = [request_features(r) for r in rows]
        event_times = [format_micros(to_micros(r.event_time)) for r in rows]
        try:
            result = self.client.predict(payload, event_times)
        except ApiError as exc:
            metrics.API_ERRORS.labels(exc.reason).inc()
            if exc.retryable:
                self.breaker.record_failure()
                raise Retry(f"/predict failed ({exc.reason}, breaker "
                            f"{self.breaker.state.name.lower()}): {exc}") from exc
            self.breaker.record_success()  # the API answers; the request is at fault
            return exc
        self.breaker.record_success()
        return result

    def _prediction(self, row: FeatureRow, result: PredictResult, i: int,
                    now_us: int) -> PredictionRecord:
        return PredictionRecord(
            record_id=row.record_id,
            product_id=row.product_id,
            event_time=row.event_time,
            predicted_time=from_micros(now_us),
            score=result.scores[i],
            spike=result.spikes[i],
            threshold=result.threshold,
            model_variant=result.model_variant,  # type: ignore[arg-type]
            model_version=result.model_version,
            api_latency_ms=round(result.latency_ms, 3),
            e2e_latency_ms=round((now_us - to_micros(row.event_time)) / 1000, 3),
            shadows=[ShadowScore(model_variant=sh.model_variant,  # type: ignore[arg-type]
                                 model_version=sh.model_version, score=sh.scores[i],
                                 spike=sh.spikes[i], threshold=sh.threshold)
                     for sh in result.shadows],
        )

    def _record(self) -> None:
        records = self._unrecorded
        try:
            self.records.write(records)
        except Exception as exc:  # even the file fallback failed (disk full, ...)
            raise Retry(f"cannot record predictions: {exc!r}") from exc
        self._unrecorded = []
        self._count(records)

    def _count(self, records: list[PredictionRecord]) -> None:
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
        newest = max(to_micros(r.predicted_time) for r in records)
        metrics.LAST_PREDICTION.set(newest / 1e6)
        self.predicted += len(records)
        self.last_prediction_at = format_micros(newest)

    def _dead_letter(self, row: FeatureRow, reason: str) -> None:
        self.rejected += 1
        metrics.ROWS_SKIPPED.labels(reason="dead_letter").inc()
        log.warning("dead-lettering feature row", extra={"reason": reason[:300]})
        self.dead_letters.send(self.topic, encode_record(row), reason, key=row.product_id)
        self._dead_unflushed = True

    def health(self) -> tuple[bool, dict[str, Any]]:
        state = self.breaker.state
        return state is not BreakerState.OPEN, {
            "breaker": state.name.lower(),
            "predicted": self.predicted,
            "rejected_by_api": self.rejected,
            "last_prediction_at": self.last_prediction_at,
        }
