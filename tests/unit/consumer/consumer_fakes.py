"""In-memory stand-ins for Kafka and the API, driven by a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from kafka.structs import TopicPartition

from cryptovol.core.codec import encode_record
from cryptovol.core.schemas import FeatureRow
from cryptovol_consumer.client import ApiError, PredictResult

TOPIC = "ticks.features"
T0 = datetime(2025, 12, 6, 1, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


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


class FakeConsumer:
    """One topic, N partitions; poll advances the clock by its timeout when idle.
    With ``leak_after_pause`` the first poll after each ``pause`` still returns
    records, as a partition assigned during a wait or an already-fetched buffer would."""

    def __init__(self, clock: Clock, partitions: int = 1, leak_after_pause: bool = False) -> None:
        self.clock = clock
        self.tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
        self.logs: dict[TopicPartition, list[Record]] = {tp: [] for tp in self.tps}
        self.positions = {tp: 0 for tp in self.tps}
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self._paused: set[TopicPartition] = set()
        self.leak_after_pause = leak_after_pause
        self._leak = False
        self.on_idle: Callable[[], None] | None = None
        self.pause_calls = 0

    def add(self, value: bytes | None, partition: int = 0, key: bytes | None = b"BTC-USD") -> None:
        tp = self.tps[partition]
        self.logs[tp].append(Record(TOPIC, partition, len(self.logs[tp]), key, value))

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        budget = max_records if max_records is not None else 10**9
        out: dict[TopicPartition, list[Record]] = {}
        leak, self._leak = self._leak, False
        for tp in self.tps:
            if budget <= 0:
                break
            if tp in self._paused and not leak:
                continue
            pos = self.positions[tp]
            chunk = self.logs[tp][pos : pos + budget]
            if chunk:
                out[tp] = chunk
                self.positions[tp] = pos + len(chunk)
                budget -= len(chunk)
        if not out:
            self.clock.now += max(timeout_ms, 1) / 1000.0
            if self.on_idle and not self._paused:
                self.on_idle()
        return out

    def offsets_by_record_id(self) -> dict[str, tuple[TopicPartition, int]]:
        out = {}
        for tp, log in self.logs.items():
            for rec in log:
                try:
                    rid = orjson.loads(rec.value or b"null")["record_id"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # malformed on purpose
                out[rid] = (tp, rec.offset)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)

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

    def commit(self, offsets: dict) -> None:
        snapshot = {tp: om.offset for tp, om in offsets.items()}
        self.committed.update(snapshot)
        self.commits.append(snapshot)

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in tps}

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.positions[tp]


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list]] = []
        self.flushes = 0

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"", headers=None) -> Any:
        self.sent.append((topic, key, value, headers or []))
        return None

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


class FakeApi:
    """Scores a row as its feature ``x`` / 100; fails the first ``outage`` calls;
    answers 422 to any batch holding a row with a ``bad`` feature."""

    def __init__(self, clock: Clock, outage: int = 0, threshold: float = 0.5) -> None:
        self.clock = clock
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
        )


class RecordingSink:
    """Keeps written records and checks, at each write, that none of them had
    its offset committed already (commit-after-record)."""

    def __init__(self, consumer: FakeConsumer, fail_times: int = 0) -> None:
        self.consumer = consumer
        self.records: list = []
        self.early_commits: list[str] = []
        self.fail_times = fail_times

    def write(self, records: list) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise OSError("disk full")
        where = self.consumer.offsets_by_record_id()
        for r in records:
            tp, offset = where[r.record_id]
            if self.consumer.committed.get(tp, 0) > offset:
                self.early_commits.append(r.record_id)
        self.records.extend(records)
