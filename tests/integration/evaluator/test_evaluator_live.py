"""The live evaluator on the real broker with the real services (API with a
shadow challenger, featurizer, consumer, evaluator, each its own process):

- replaying recordings, its live PR-AUC per scorer (served model, shadow,
  persistence) equals ``cryptovol-train evaluate`` on the same recordings and
  artifacts within 0.01, on the same rows;
- killed with SIGKILL mid-stream and restarted, it grades exactly the
  predictions an uninterrupted run grades, each once, with the same labels.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from kafka.structs import TopicPartition
from pipeline_procs import REPO_ROOT, Child, wait_http
from prometheus_client.parser import text_string_to_metric_families

from cryptovol.core.codec import encode_tick
from cryptovol.core.features import FeatureEngine
from cryptovol.devtools.net import free_port
from cryptovol.runtime.kafka import ensure_topics, make_consumer, make_producer
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol.runtime.settings import ServiceSettings
from cryptovol_training.evaluate import evaluate

pytestmark = pytest.mark.slow

FILES = sorted((REPO_ROOT / "data/coinbase-ticker").glob("ticks_BTCUSD_20251206_0[12]*.ndjson.gz"))
SERVED, SHADOW = "logistic_regression", "random_forest"
WINDOWS = "15m,1h,30d"  # 30d: the whole replay


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(metrics: dict, name: str, **labels: str) -> float | None:
    want = set(labels.items())
    found = [v for (n, lab), v in metrics.items() if n == name and want <= set(lab)]
    return sum(found) if found else None


def read_labelled(settings: ServiceSettings, topic: str) -> list[dict]:
    consumer = make_consumer(settings, None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[dict] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(orjson.loads(r.value) for r in batch)
        return out
    finally:
        consumer.close()


def count_labelled(settings: ServiceSettings, topic: str) -> int:
    consumer = make_consumer(settings, None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        return sum(end[tp] - begin[tp] for tp in tps)
    finally:
        consumer.close()


def expected_predictions() -> int:
    engine = FeatureEngine()
    return sum(1 for t in read_ticks(open_recordings(FILES))
               if (r := engine.step(t)) is not None and not r.warmup)


def evaluator_env(settings: ServiceSettings, name: str, labelled: str, port: int,
                  tmp: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap, "TOPIC_RAW": settings.topic_raw,
        "TOPIC_PREDICTIONS": settings.topic_predictions, "TOPIC_LABELLED": labelled,
        "KAFKA_PARTITIONS": "3", "CONSUMER_GROUP": f"evaluator-{name}",
        "METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1",
        "QUALITY_WINDOWS": WINDOWS, "QUALITY_REFRESH_S": "1",
        "PARQUET_DIR": str(tmp / f"labelled-{name}"), "PARQUET_FLUSH_S": "2",
    }


@pytest.fixture(scope="module")
def replay(kafka_broker, tmp_path_factory) -> Iterator[dict]:
    """The whole pipeline over the recordings, run once; the evaluator's metrics
    and its labelled topic once every prediction is graded."""
    name = os.urandom(5).hex()
    tmp = tmp_path_factory.mktemp("evaluator")
    settings = ServiceSettings(
        service_name="test", kafka_bootstrap_servers=kafka_broker.bootstrap,
        topic_raw=f"ticks.raw.{name}", topic_features=f"ticks.features.{name}",
        topic_predictions=f"predictions.log.{name}", kafka_partitions=3)
    labelled = f"predictions.labelled.{name}"
    ensure_topics(settings, [settings.topic_raw, settings.topic_features,
                             settings.topic_predictions, labelled])
    kafka = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap, "TOPIC_RAW": settings.topic_raw,
             "TOPIC_FEATURES": settings.topic_features,
             "TOPIC_PREDICTIONS": settings.topic_predictions, "KAFKA_PARTITIONS": "3"}
    api_port, feat_port, cons_port, eval_port = (free_port() for _ in range(4))
    children = [
        Child("cryptovol_api.main", {
            **kafka, "API_HOST": "127.0.0.1", "API_PORT": str(api_port),
            "MODELS_DIR": str(REPO_ROOT / "models/artifacts"), "MODEL_VARIANT": "ml",
            "MODEL_VERSION": SERVED, "MODEL_SHADOW": SHADOW}, tmp / "api.log"),
        Child("cryptovol_featurizer.main", {
            **kafka, "METRICS_PORT": str(feat_port), "METRICS_HOST": "127.0.0.1",
            "CONSUMER_GROUP": f"featurizer-{name}", "PARQUET_ENABLED": "false"},
            tmp / "featurizer.log"),
        Child("cryptovol_consumer.main", {
            **kafka, "METRICS_PORT": str(cons_port), "METRICS_HOST": "127.0.0.1",
            "CONSUMER_GROUP": f"consumer-{name}", "API_URL": f"http://127.0.0.1:{api_port}",
            "LOG_PREDICTIONS": "true", "RATE_LIMIT_RPS": "0", "BATCH_SIZE": "500",
            "PREDICTION_LOG_DIR": str(tmp / "predictions")}, tmp / "consumer.log"),
        Child("cryptovol_evaluator.main", evaluator_env(settings, name, labelled, eval_port, tmp),
              tmp / "evaluator.log"),
    ]
    expected = expected_predictions()
    try:
        children[0].start()
        wait_http(f"http://127.0.0.1:{api_port}/readyz")
        for child, port in zip(children[1:], (feat_port, cons_port, eval_port), strict=True):
            child.start()
            wait_http(f"http://127.0.0.1:{port}/healthz")
        producer = make_producer(settings)
        for tick in read_ticks(open_recordings(FILES)):
            producer.send(settings.topic_raw, key=tick.product_id.encode(),
                          value=encode_tick(tick))
        producer.flush()
        producer.close()
        url = f"http://127.0.0.1:{eval_port}/metrics"
        deadline = time.monotonic() + 420  # a bound for a loaded machine, not a timing
        while time.monotonic() < deadline:
            metrics = scrape(url)
            graded = sample(metrics, "cryptovol_evaluator_window_rows",
                            role="served", window="30d") or 0
            pending = sample(metrics, "cryptovol_evaluator_pending_predictions") or 0
            if graded and graded + pending >= expected:
                break
            time.sleep(2)
        else:
            outcomes = {k: v for k, v in metrics.items()
                        if k[0].startswith("cryptovol_evaluator_predictions_total")}
            consumer = scrape(f"http://127.0.0.1:{cons_port}/metrics")
            predicted = sample(consumer, "cryptovol_consumer_predictions_total")
            pytest.fail(f"graded {graded} + pending {pending} of {expected} predictions "
                        f"(consumer: {predicted}; evaluator: {outcomes}):\n"
                        + children[3].log_tail())
        time.sleep(2.5)  # one more refresh of the windows
        yield {"settings": settings, "labelled": labelled, "metrics": scrape(url),
               "expected": expected, "name": name, "tmp": tmp,
               "records": read_labelled(settings, labelled)}
    finally:
        codes = [c.stop() for c in reversed(children)]  # the API last
        for c in children:
            print(c.module, c.log_tail(1500))
    assert codes[:3] == [0, 0, 0], codes  # evaluator, consumer, featurizer


@pytest.fixture(scope="module")
def offline():
    return evaluate(FILES, REPO_ROOT / "models/artifacts", progress=False)


def test_live_pr_auc_per_scorer_equals_train_evaluate_on_the_same_rows(replay, offline):
    metrics, models = replay["metrics"], offline["models"]
    labelled = sample(metrics, "cryptovol_evaluator_window_labelled_rows", role="served",
                      window="30d")
    # the same rows: every row past warm-up with a label (the last minute of the
    # replay waits for a tick past its horizon that never comes)
    assert labelled == pytest.approx(offline["rows"], rel=0.005)
    for role, version, name in (("served", SERVED, SERVED), ("shadow", SHADOW, SHADOW),
                                ("reference", "persistence", "persistence")):
        live = sample(metrics, "cryptovol_evaluator_pr_auc", role=role, window="30d",
                      **({"model_version": models[name]["version"]} if role != "reference"
                         else {}))
        assert live is not None, (role, version)
        assert live == pytest.approx(models[name]["pr_auc"], abs=0.01), (role, name)
        f1 = sample(metrics, "cryptovol_evaluator_f1", role=role, window="30d",
                    **({"model_version": models[name]["version"]} if role != "reference"
                       else {}))
        assert f1 == pytest.approx(models[name]["f1"], abs=0.01), (role, name)
    spike_rate = sample(metrics, "cryptovol_evaluator_spike_rate", role="served", window="30d")
    assert spike_rate == pytest.approx(offline["prevalence"], abs=0.005)
    # rows whose future window a gap between recordings cuts get no label, live or
    # offline; the last minute of the replay is still waiting for a later tick
    coverage = sample(metrics, "cryptovol_evaluator_label_coverage", role="served", window="30d")
    graded = sample(metrics, "cryptovol_evaluator_window_rows", role="served", window="30d")
    pending = sample(metrics, "cryptovol_evaluator_pending_predictions")
    assert graded + pending == replay["expected"]
    assert coverage == pytest.approx(offline["rows"] / graded, abs=0.005)
    # shorter windows hold fewer rows: the end of the replay
    rows = {w: sample(metrics, "cryptovol_evaluator_window_rows", role="served", window=w)
            for w in ("15m", "1h", "30d")}
    assert 0 < rows["15m"] < rows["1h"] < rows["30d"]


def test_labelled_predictions_are_on_the_topic_once_each(replay):
    records = replay["records"]
    ids = Counter(r["record_id"] for r in records)
    assert ids and max(ids.values()) == 1
    labelled = [r for r in records if r["has_label"]]
    roles = Counter(s["role"] for r in labelled for s in r["scores"])
    assert roles["served"] == roles["shadow"] == roles["reference"] == len(labelled)


def test_sigkill_mid_stream_then_restart_grades_exactly_what_an_uninterrupted_run_does(replay):
    """A second evaluator (own group, own labelled topic) over the same topics,
    killed without warning while grading and started again."""
    settings, name, tmp = replay["settings"], replay["name"] + "-restart", replay["tmp"]
    labelled = f"predictions.labelled.{name}"
    ensure_topics(settings, [labelled])
    port = free_port()
    env = {**evaluator_env(settings, name, labelled, port, tmp), "POLL_MAX_RECORDS": "100"}
    total = len(replay["records"])
    child = Child("cryptovol_evaluator.main", env, tmp / "evaluator-restart.log").start()
    try:
        deadline = time.monotonic() + 180
        while count_labelled(settings, labelled) < total // 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        child.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        child.proc.wait(30)  # type: ignore[union-attr]
        child.proc = None
        at_kill = count_labelled(settings, labelled)
        assert 0 < at_kill < total, f"killed at {at_kill} of {total}: not mid-stream"
        child.start()
        wait_http(f"http://127.0.0.1:{port}/healthz")
        deadline = time.monotonic() + 300
        while count_labelled(settings, labelled) < total and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)  # anything graded twice would show up now
        records = read_labelled(settings, labelled)
    finally:
        code = child.stop()
        print(child.log_tail(3000))
    assert code == 0
    ids = Counter(r["record_id"] for r in records)
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
    uninterrupted = {r["record_id"]: (r["has_label"], r["spike"], r["reason"])
                     for r in replay["records"]}
    restarted = {r["record_id"]: (r["has_label"], r["spike"], r["reason"]) for r in records}
    assert restarted == uninterrupted
