"""Producing ticks to and reading feature rows from the real broker."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from kafka import KafkaConsumer

from cryptovol.core.codec import encode_tick
from cryptovol.core.features import FEATURE_NAMES
from cryptovol.core.schemas import FeatureRow
from cryptovol.core.ticks import Tick
from cryptovol.runtime.kafka import make_producer
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol.runtime.settings import ServiceSettings


def recorded_ticks(recordings_dir: Path) -> list[Tick]:
    return list(read_ticks(open_recordings([recordings_dir])))


def relabel(ticks: Iterable[Tick], product: str) -> list[Tick]:
    """The same market data as another product (to fill several partitions)."""
    out = []
    for t in ticks:
        rid = product + t.record_id[len(t.product_id):]
        out.append(t._replace(product_id=product, record_id=rid))
    return out


def produce(settings: ServiceSettings, ticks: Iterable[Tick], extra: Iterable[bytes] = (),
            per_second: float | None = None) -> int:
    """Send ticks keyed by product (optionally paced), plus raw ``extra`` messages."""
    producer = make_producer(settings)
    sent = 0
    started = time.monotonic()
    try:
        for tick in ticks:
            producer.send(settings.topic_raw, key=tick.product_id.encode(),
                          value=encode_tick(tick))
            sent += 1
            if per_second and sent % 200 == 0:
                ahead = sent / per_second - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        for raw in extra:
            producer.send(settings.topic_raw, key=b"BTC-USD", value=raw)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return sent


def read_rows(settings: ServiceSettings, topic: str, want: int, timeout_s: float = 120.0,
              distinct: bool = True) -> list[tuple[int, FeatureRow]]:
    """(partition, row) from ``topic`` until ``want`` rows (distinct record ids when
    ``distinct``) have arrived or the time is up."""
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=1000)
    rows: list[tuple[int, FeatureRow]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while (len(seen) if distinct else len(rows)) < want and time.monotonic() < deadline:
            for record in consumer:
                row = FeatureRow.model_validate_json(record.value)
                rows.append((record.partition, row))
                seen.add(row.record_id)
    finally:
        consumer.close()
    return rows


class Collector:
    """Reads ``topic`` in a background thread, keeping every row in arrival order."""

    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        self.rows: list[tuple[int, FeatureRow]] = []
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(topic, bootstrap_servers=settings.bootstrap,
                                       group_id=None, auto_offset_reset="earliest",
                                       enable_auto_commit=False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=200).values():
                self.rows.extend((r.partition, FeatureRow.model_validate_json(r.value))
                                 for r in records)

    def distinct(self) -> int:
        return len({row.record_id for _, row in list(self.rows)})

    def close(self) -> list[tuple[int, FeatureRow]]:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()
        return self.rows


def as_frame_values(row: FeatureRow) -> list[float]:
    return [math.nan if row.features[n] is None else row.features[n] for n in FEATURE_NAMES]


def assert_rows_equal_frame(rows: list[FeatureRow], frame: pd.DataFrame) -> None:
    """Bit for bit: same rows in the same order, same flags, same feature values."""
    assert [r.record_id for r in rows] == frame["record_id"].tolist()
    assert [r.warmup for r in rows] == frame["warmup"].tolist()
    assert [r.event_time for r in rows] == frame["event_time"].tolist()
    got = pd.DataFrame([as_frame_values(r) for r in rows], columns=list(FEATURE_NAMES))
    want = frame[list(FEATURE_NAMES)].reset_index(drop=True)
    # NaN-aware exact equality, column by column
    for name in FEATURE_NAMES:
        a, b = got[name].to_numpy(), want[name].to_numpy()
        same = (a == b) | (pd.isna(a) & pd.isna(b))
        assert same.all(), (name, int((~same).sum()))
