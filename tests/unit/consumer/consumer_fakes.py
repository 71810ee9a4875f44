"""Stand-ins for the prediction API and the record store, driven by a fake clock
(the Kafka fakes are tests/fakes/kafka_fakes.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from kafka_fakes import Clock, FakeConsumer

from cryptovol.core.codec import encode_record
from cryptovol.core.schemas import FeatureRow
from cryptovol_consumer.client import ApiError, PredictResult, ShadowResult

TOPIC = "ticks.features"
T0 = datetime(2025, 12, 6, 1, 0, tzinfo=UTC)


def feature_bytes(i: int, *, warmup: bool = False, **features: float | None) -> bytes:
    row = FeatureRow(
        record_id=f"BTC-USD:{i}:0",
        product_id="BTC-USD",
        event_time=T0 + timedelta(seconds=i),
        receive_time=T0 + timedelta(seconds=i),
        warmup=warmup,
        features=features or {"x": float(i)},
    )
    return encode_record(row)


class FakeApi:
    """Scores a row as its feature ``x`` / 100; fails the first ``outage`` calls;
    answers 422 to any batch holding a row with a ``bad`` feature."""

    def __init__(self, clock: Clock, outage: int = 0, threshold: float = 0.5,
                 shadow: bool = False) -> None:
        self.clock = clock
        self.shadow = shadow  # also answer a challenger's scores: 1 - score
        self.outage = outage
        self.threshold = threshold
        self.calls: list[list[dict]] = []
        self.failures = 0

    def predict(self, rows: list[dict], event_times: list[str] | None = None) -> PredictResult:
        self.calls.append(rows)
        self.clock.now += 0.002
        if self.failures < self.outage:
            self.failures += 1
            raise ApiError("connect", "connection refused")
        if any("bad" in r for r in rows):
            raise ApiError("http_4xx", "/predict 422: validation", status=422)
        scores = [min(1.0, (r.get("x") or 0.0) / 100.0) for r in rows]
        return PredictResult(
            scores=scores,
            spikes=[s >= self.threshold for s in scores],
            threshold=self.threshold,
            model_variant="ml",
            model_version="v-fake",
            latency_ms=2.0,
            shadows=(ShadowResult("baseline", "v-shadow", 0.4, [1 - s for s in scores],
                                  [1 - s >= 0.4 for s in scores]),) if self.shadow else (),
        )

    def close(self) -> None:
        pass


class RecordingSink:
    """Keeps written records and checks, at each write, that none of them had
    its offset committed already (commit-after-record)."""

    def __init__(self, consumer: FakeConsumer, fail_times: int = 0) -> None:
        self.consumer = consumer
        self.records: list = []
        self.early_commits: list[str] = []
        self.fail_times = fail_times

    def _offsets(self) -> dict[str, tuple]:
        out = {}
        for tp, log in self.consumer.logs.items():
            for rec in log:
                try:
                    out[orjson.loads(rec.value or b"null")["record_id"]] = (tp, rec.offset)
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # malformed on purpose
        return out

    def write(self, records: list) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise OSError("disk full")
        where = self._offsets()
        for r in records:
            tp, offset = where[r.record_id]
            if self.consumer.committed_offsets.get(tp, 0) > offset:
                self.early_commits.append(r.record_id)
        self.records.extend(records)
