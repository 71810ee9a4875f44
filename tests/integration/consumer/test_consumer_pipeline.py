"""End to end with the real broker, API and consumer processes: every feature
row is predicted and recorded in predictions.log, also when the API is stopped
for 10 s mid-stream; warm-up rows are skipped and malformed rows dead-lettered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from kafka.structs import TopicPartition
from pipeline_procs import REPO_ROOT, Child, wait_http

from cryptovol.core.codec import encode_row
from cryptovol.core.features import FeatureEngine
from cryptovol.core.schemas import PredictionRecord
from cryptovol.devtools.net import free_port
from cryptovol.runtime.kafka import ensure_topics, make_consumer, make_producer
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol.runtime.settings import ServiceSettings

RECORDINGS = REPO_ROOT / "data" / "coinbase-ticker"
N_ROWS = 600
OUTAGE_S = 10.0


def feature_rows(n: int) -> list[bytes]:
    """The first ``n`` warm feature rows of the bundled recordings of 2025-12-06 (a row
    is warm once 30 minutes of context lie behind it), as Kafka values."""
    recordings = open_recordings(
        sorted((REPO_ROOT / "data/coinbase-ticker").glob("ticks_BTCUSD_20251206_0*.ndjson.gz"))
    )
    engine = FeatureEngine()
    out: list[bytes] = []
    for tick in read_ticks(recordings):
        res = engine.step(tick)
        if res is not None and not res.warmup:
            out.append(encode_row(tick, res))
            if len(out) == n:
                break
    assert len(out) == n
    return out


def warmup_rows(n: int) -> list[bytes]:
    recordings = open_recordings(
        [REPO_ROOT / "data/coinbase-ticker/ticks_BTCUSD_20251130_235611.ndjson.gz"]
    )
    engine = FeatureEngine()
    steps = [(t, engine.step(t)) for t in read_ticks(recordings)]
    warm = [encode_row(t, res) for t, res in steps if res is not None and res.warmup]
    return warm[:n]


def record_id(value: bytes) -> str:
    return orjson.loads(value)["record_id"]


def read_topic(settings: ServiceSettings, topic: str, expected: int, timeout_s: float = 60) -> list:
    consumer = make_consumer(settings, None)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


@pytest.fixture
def pipeline(kafka_settings: ServiceSettings, tmp_path: Path, unique_name: str) -> Iterator[dict]:
    ensure_topics(kafka_settings, [kafka_settings.topic_features, kafka_settings.topic_predictions])
    api_port, metrics_port = free_port(), free_port()
    api_env = {
        "API_HOST": "127.0.0.1",
        "API_PORT": str(api_port),
        "MODELS_DIR": str(REPO_ROOT / "models" / "artifacts"),
        "MODEL_VARIANT": "ml",
        "MODEL_VERSION": "random_forest",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap,
    }
    consumer_env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap,
        "TOPIC_FEATURES": kafka_settings.topic_features,
        "TOPIC_PREDICTIONS": kafka_settings.topic_predictions,
        "CONSUMER_GROUP": f"consumer-{unique_name}",
        "API_URL": f"http://127.0.0.1:{api_port}",
        "METRICS_PORT": str(metrics_port),
        "METRICS_HOST": "127.0.0.1",
        "BATCH_SIZE": "50",
        "BATCH_LINGER_MS": "100",
        "RETRY_MAX_S": "1.5",
        "BREAKER_RESET_S": "1",
        "LOG_PREDICTIONS": "true",
        "PREDICTION_LOG_DIR": str(tmp_path / "predictions"),
    }
    api = Child("cryptovol_api.main", api_env, tmp_path / "api.log")
    consumer = Child("cryptovol_consumer.main", consumer_env, tmp_path / "consumer.log")
    try:
        api.start()
        wait_http(f"http://127.0.0.1:{api_port}/readyz")
        consumer.start()
        wait_http(f"http://127.0.0.1:{metrics_port}/healthz")
        yield {
            "api": api,
            "consumer": consumer,
            "api_ready": f"http://127.0.0.1:{api_port}/readyz",
            "metrics": f"http://127.0.0.1:{metrics_port}",
            "fallback_dir": tmp_path / "predictions",
        }
    finally:
        consumer_code = consumer.stop()
        api.stop()
        print("consumer log tail:\n" + consumer.log_tail())
        assert consumer_code == 0, "the consumer did not stop cleanly on SIGTERM"


def _predictions_total(metrics_url: str) -> float:
    text = httpx.get(f"{metrics_url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cryptovol_consumer_predictions_total{")
    )


def _metric(metrics_url: str, prefix: str) -> float:
    text = httpx.get(f"{metrics_url}/metrics", timeout=5).text
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(prefix))


def test_every_row_is_predicted_through_an_api_outage(
    kafka_settings: ServiceSettings, pipeline: dict
) -> None:
    rows = feature_rows(N_ROWS)
    warm = warmup_rows(5)
    malformed = [b"{not json", b'{"record_id": "x"}', b""]
    producer = make_producer(kafka_settings)
    produced = threading.Event()

    def produce() -> None:
        # a steady stream (~40 rows/s) with the odd warm-up and malformed message
        for i, value in enumerate(rows):
            producer.send(kafka_settings.topic_features, key=b"BTC-USD", value=value)
            if i % 120 == 60:
                producer.send(kafka_settings.topic_features, key=b"BTC-USD", value=warm.pop())
                producer.send(kafka_settings.topic_features, key=b"BTC-USD", value=malformed[0])
                malformed.append(malformed.pop(0))
            time.sleep(0.025)
        producer.flush()
        produced.set()

    feeder = threading.Thread(target=produce, daemon=True)
    feeder.start()
    try:
        # let the stream get going, then take the API away for 10 s mid-stream
        deadline = time.monotonic() + 120
        while _predictions_total(pipeline["metrics"]) < 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _predictions_total(pipeline["metrics"]) >= 100, pipeline["consumer"].log_tail()
        pipeline["api"].stop()
        stopped_at = time.monotonic()
        time.sleep(OUTAGE_S)
        during = _predictions_total(pipeline["metrics"])
        errors = _metric(pipeline["metrics"], "cryptovol_consumer_api_errors_total{")
        breaker = _metric(pipeline["metrics"], "cryptovol_consumer_breaker_state")
        assert time.monotonic() - stopped_at >= OUTAGE_S
        pipeline["api"].start()
        wait_http(pipeline["api_ready"])
        assert produced.wait(120)
    finally:
        feeder.join(timeout=130)
        producer.close()

    assert errors > 0, "the consumer never noticed the outage"
    assert breaker == 2.0, "the breaker did not open while the API was down"
    assert during < N_ROWS

    # wait until the consumer caught up, then compare with predictions.log
    deadline = time.monotonic() + 120
    while _predictions_total(pipeline["metrics"]) < N_ROWS and time.monotonic() < deadline:
        time.sleep(0.5)
    records = read_topic(kafka_settings, kafka_settings.topic_predictions, N_ROWS)
    predicted = {PredictionRecord.model_validate_json(r.value).record_id for r in records}
    expected = {record_id(v) for v in rows}
    missing = expected - predicted
    assert not missing, f"{len(missing)} rows never predicted, e.g. {sorted(missing)[:5]}"
    assert predicted == expected  # warm-up rows were skipped, nothing else was scored
    assert all(r.key == b"BTC-USD" for r in records)
    sample = PredictionRecord.model_validate_json(records[0].value)
    served = json.loads((REPO_ROOT / "models/artifacts/random_forest/metadata.json").read_text())
    assert sample.model_variant == "ml" and sample.model_version == served["version"]
    assert sample.spike == (sample.score >= sample.threshold)

    dead = read_topic(kafka_settings, kafka_settings.topic_features + ".dlq", 5)
    assert len(dead) == 5
    assert all(dict(r.headers)["reason"] for r in dead)
    health = httpx.get(pipeline["metrics"] + "/health", timeout=5).json()
    assert health["status"] == "ok" and health["breaker"] == "closed"
    assert health["skipped_warmup"] == 5 and health["dead_lettered"] == 5
    assert _metric(pipeline["metrics"], "cryptovol_consumer_breaker_state") == 0.0
    assert _metric(pipeline["metrics"], "cryptovol_consumer_prediction_log_fallback_total") == 0
    assert not pipeline["fallback_dir"].exists()
