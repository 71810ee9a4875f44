"""Two featurizer processes in one group; one is killed mid-stream. The rows,
de-duplicated by ``record_id`` (delivery is at least once), equal the offline
table, which the parity test shows equal to a single process's output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from featurizer_testkit import (
    Collector,
    assert_rows_equal_frame,
    produce,
    recorded_ticks,
    relabel,
)
from kafka.partitioner.default import murmur2

from cryptovol.core.features import features_frame
from cryptovol.core.schemas import FeatureRow
from cryptovol.runtime.kafka import ensure_topics
from cryptovol.runtime.settings import ServiceSettings

PRODUCTS = ("BTC-USD", "XRP-USD", "ETH-USD")  # one per partition of three
BIN = Path(sys.executable).parent / "cryptovol-featurizer"


class Process:
    def __init__(self, name: str, settings: ServiceSettings, group: str, tmp: Path) -> None:
        self.log_path = tmp / f"{name}.log"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap,
            "TOPIC_RAW": settings.topic_raw,
            "TOPIC_FEATURES": settings.topic_features,
            "CONSUMER_GROUP": group,
            "METRICS_PORT": "0",
            "METRICS_HOST": "127.0.0.1",
            "PARQUET_ENABLED": "false",
            "LOG_LEVEL": "INFO",
        }
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen([str(BIN)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def events(self, msg: str) -> list[dict]:
        out = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if entry.get("msg") == msg:
                out.append(entry)
        return out

    def partitions(self) -> set[int]:
        """The partitions of the latest assignment (empty if revoked since)."""
        held: set[int] = set()
        for line in self.log_path.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if entry.get("msg") == "partitions assigned":
                held = set(entry["partitions"])
            elif entry.get("msg") == "partitions revoked":
                held -= set(entry["partitions"])
        return held

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.log.close()


def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_killing_one_of_two_replicas_mid_stream_changes_no_row(
    kafka_settings: ServiceSettings, unique_name: str, recordings_dir: Path, tmp_path: Path
) -> None:
    partitions = {(murmur2(p.encode()) & 0x7FFFFFFF) % 3 for p in PRODUCTS}
    assert partitions == {0, 1, 2}
    # ~95 min of Dec 6, with gaps: the kill comes well past the 31 minutes a rebuild reads back
    base = recorded_ticks(recordings_dir)[20_400:40_400]
    per_product = [relabel(base, p) for p in PRODUCTS]
    ticks = [t for group in zip(*per_product, strict=True) for t in group]  # interleaved
    frame = features_frame(ticks)
    ensure_topics(kafka_settings, [kafka_settings.topic_raw, kafka_settings.topic_features])

    group = f"featurizer-{unique_name}"
    a = Process("a", kafka_settings, group, tmp_path)
    b = Process("b", kafka_settings, group, tmp_path)
    try:
        wait_for(lambda: len(a.partitions() | b.partitions()) == 3 and a.partitions()
                 and b.partitions(), 90, "both replicas to hold partitions")
        victim, survivor = (a, b) if len(a.partitions()) >= len(b.partitions()) else (b, a)
        lost = victim.partitions()

        collector = Collector(kafka_settings, kafka_settings.topic_features)
        producer = threading.Thread(target=produce, args=(kafka_settings, ticks),
                                    kwargs={"per_second": 2000}, daemon=True)
        producer.start()
        wait_for(lambda: len(collector.rows) >= len(frame) // 2, 120, "half of the rows")
        victim.stop(signal.SIGKILL)  # no goodbye: the group notices by session timeout
        killed_at = len(collector.rows)
        wait_for(lambda: collector.distinct() >= len(frame), 180, "every row")
        producer.join(timeout=60)
        rows = collector.close()
        assert killed_at < len(frame) * 0.6, "the kill came too late to matter"
        assert survivor.partitions() == {0, 1, 2}
        rebuilt = survivor.events("window state rebuilt")
        assert {e["partition"] for e in rebuilt} >= lost
        assert any(e["ticks"] > 0 and e["from_offset"] > 0 for e in rebuilt
                   if e["partition"] in lost), "the survivor read back part of a partition"
    finally:
        for proc in (a, b):
            proc.stop()

    first: dict[str, FeatureRow] = {}
    for _, row in rows:
        if row.record_id in first:  # replayed after the kill: must be the same row
            assert row == first[row.record_id]
        else:
            first[row.record_id] = row
    for product in PRODUCTS:
        mine = [row for row in first.values() if row.product_id == product]
        assert_rows_equal_frame(mine, frame[frame["product_id"] == product])
