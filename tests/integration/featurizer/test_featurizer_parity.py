"""The streaming service over the real broker equals the offline path, bit for bit."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from featurizer_testkit import (
    assert_rows_equal_frame,
    produce,
    read_rows,
    recorded_ticks,
)
from kafka import KafkaConsumer

from cryptovol.core.features import features_frame
from cryptovol.runtime.health import serve_http
from cryptovol.runtime.kafka import Clients, ensure_topics, make_consumer, make_producer
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.settings import ServiceSettings
from cryptovol.runtime.worker import StreamWorker
from cryptovol_featurizer.main import build
from cryptovol_featurizer.settings import FeaturizerSettings

MALFORMED = [b"not json", b'{"record_id": "x", "product_id": "BTC-USD"}']


def featurizer_settings(kafka_settings: ServiceSettings, unique_name: str,
                        **extra: object) -> FeaturizerSettings:
    return FeaturizerSettings(
        kafka_bootstrap_servers=kafka_settings.kafka_bootstrap_servers,
        topic_raw=kafka_settings.topic_raw, topic_features=kafka_settings.topic_features,
        consumer_group=f"featurizer-{unique_name}", kafka_partitions=3, **extra)


class InProcess:
    """The service, wired as its main wires it, in a thread on real Kafka clients."""

    def __init__(self, settings: FeaturizerSettings) -> None:
        self.shutdown = Shutdown(install=False)
        self.clients = Clients(make_consumer(settings, settings.consumer_group),
                               make_producer(settings), make_consumer(settings, None))
        stage, sinks = build(settings, self.clients)
        self.worker = StreamWorker(settings.worker_config(), self.clients.consumer,
                                   self.clients.producer, stage, sinks, shutdown=self.shutdown,
                                   reader=self.clients.reader)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self) -> StreamWorker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.shutdown.request()
        self.thread.join(timeout=60)
        self.clients.close(10)


@pytest.mark.slow
def test_stream_equals_offline_on_the_bundled_recordings(
    kafka_settings: ServiceSettings, unique_name: str, recordings_dir: Path, tmp_path: Path
) -> None:
    ticks = recorded_ticks(recordings_dir)
    frame = features_frame(ticks)
    settings = featurizer_settings(kafka_settings, unique_name, parquet_flush_s=2.0,
                                   parquet_max_rows=20_000, parquet_dir=tmp_path / "stream")
    ensure_topics(settings, [settings.topic_raw, settings.topic_features])
    produce(settings, ticks, extra=MALFORMED)
    with InProcess(settings) as service:
        server = serve_http(0, service.health, host="127.0.0.1")
        try:
            rows = read_rows(settings, settings.topic_features, want=len(frame))
            port = server.server_address[1]
            health = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        finally:
            server.shutdown()
    # one product, one partition: the topic keeps the order
    assert_rows_equal_frame([row for _, row in rows], frame)
    assert health["status"] == "ok" and health["dead_lettered"] == len(MALFORMED)
    assert 'cryptovol_featurizer_ticks_dropped_total{reason="late"}' in metrics
    assert "cryptovol_featurizer_processing_lag_seconds_count" in metrics

    dlq = KafkaConsumer(settings.topic_raw + ".dlq", bootstrap_servers=settings.bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=5000)
    dead = [(r.value, dict(r.headers)) for r in dlq]
    dlq.close()
    assert sorted(v for v, _ in dead) == sorted(MALFORMED)
    assert all(h["source_topic"] == settings.topic_raw.encode() for _, h in dead)

    files = sorted((tmp_path / "stream").glob("product=*/date=*/part-*.parquet"))
    written = pd.concat([pq.read_table(p).to_pandas() for p in files]).sort_values(
        "ts", kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(written, frame.drop(columns="segment_id"), check_dtype=False)
