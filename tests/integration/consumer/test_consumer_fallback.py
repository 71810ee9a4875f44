"""When Kafka will not take the prediction records, they go to files under the
prediction log directory, and offsets are still committed only after that."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.structs import TopicPartition
from pipeline_procs import REPO_ROOT, Child, wait_http
from prometheus_client import REGISTRY

from cryptovol.core.codec import encode_record
from cryptovol.core.schemas import FeatureRow, PredictionRecord
from cryptovol.core.timestamps import from_micros, now_micros
from cryptovol.devtools.net import free_port
from cryptovol.runtime.kafka import Clients, ensure_topics, make_consumer, make_producer
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.worker import StreamWorker
from cryptovol_consumer.main import build
from cryptovol_consumer.settings import ConsumerSettings

N_ROWS = 120


def _fallbacks() -> float:
    return REGISTRY.get_sample_value("cryptovol_consumer_prediction_log_fallback_total") or 0.0


@pytest.fixture
def baseline_api(tmp_path: Path) -> object:
    port = free_port()
    env = {
        "API_PORT": str(port),
        "MODELS_DIR": str(REPO_ROOT / "models" / "artifacts"),
        "MODEL_VARIANT": "baseline",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }
    api = Child("cryptovol_api.main", env, tmp_path / "api.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        api.stop()


def test_refused_prediction_records_fall_back_to_files(
    kafka_settings: object, baseline_api: str, tmp_path: Path, unique_name: str
) -> None:
    settings = ConsumerSettings(
        **kafka_settings.model_dump(),  # type: ignore[attr-defined]
        api_url=baseline_api,
        consumer_group=f"fallback-{unique_name}",
        batch_size=40,
        batch_linger_ms=50,
        prediction_log_dir=tmp_path / "logs" / "predictions",
        log_predictions=True,
    )
    ensure_topics(settings, [settings.topic_features])
    # The prediction topic refuses every record: each is larger than it allows.
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        admin.create_topics([NewTopic(settings.topic_predictions, 1, 1,
                                      topic_configs={"max.message.bytes": "64"})])  # fmt: skip
    finally:
        admin.close()

    producer = make_producer(settings)
    ids = []
    for i in range(N_ROWS):
        now = from_micros(now_micros())
        row = FeatureRow(
            record_id=f"BTC-USD:{i}:0", product_id="BTC-USD", event_time=now, receive_time=now,
            warmup=False, features={"vol_ratio_60_300": 0.5 + i / N_ROWS},
        )  # fmt: skip
        producer.send(settings.topic_features, key=b"BTC-USD", value=encode_record(row))
        ids.append(row.record_id)
    producer.flush()

    consumer = make_consumer(settings, settings.consumer_group)
    shutdown = Shutdown(install=False)
    stage, [predictor] = build(settings, Clients(consumer, producer))  # as main wires it
    worker = StreamWorker(settings.worker_config(), consumer, producer, stage, [predictor],
                          shutdown=shutdown)
    before = _fallbacks()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while predictor.predicted < N_ROWS and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        shutdown.request()
        thread.join(timeout=60)
        predictor.close()

    assert predictor.predicted == N_ROWS
    files = list(settings.prediction_log_dir.glob("predictions-*.ndjson"))
    assert len(files) == 1
    stored = [PredictionRecord.model_validate_json(x) for x in files[0].read_bytes().splitlines()]
    assert sorted(r.record_id for r in stored) == sorted(ids)
    assert {r.model_variant for r in stored} == {"baseline"}
    assert _fallbacks() == before + N_ROWS
    # and the offsets were committed after the records were in the files
    partitions = [TopicPartition(settings.topic_features, p) for p in range(3)]
    committed = sum((consumer.committed(tp) or 0) for tp in partitions)
    consumer.close()
    producer.close()
    assert committed == N_ROWS
