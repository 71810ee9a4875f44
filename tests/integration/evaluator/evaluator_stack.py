"""Helpers of the evaluator's integration tests: metrics scraped from a real
service, the labelled topic read back, the evaluator's environment."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from kafka.structs import TopicPartition
from pipeline_procs import Child, wait_http
from prometheus_client.parser import text_string_to_metric_families

from cryptovol.core.codec import encode_tick
from cryptovol.devtools.net import free_port
from cryptovol.runtime.kafka import ensure_topics, make_consumer, make_producer
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol.runtime.settings import ServiceSettings


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


def evaluator_env(settings: ServiceSettings, name: str, labelled: str, port: int,
                  tmp: Path, windows: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap, "TOPIC_RAW": settings.topic_raw,
        "TOPIC_PREDICTIONS": settings.topic_predictions, "TOPIC_LABELLED": labelled,
        "KAFKA_PARTITIONS": "3", "CONSUMER_GROUP": f"evaluator-{name}",
        "METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1",
        "QUALITY_WINDOWS": windows, "QUALITY_REFRESH_S": "1",
        "PARQUET_DIR": str(tmp / f"labelled-{name}"), "PARQUET_FLUSH_S": "2",
    }


@dataclass
class Pipeline:
    """API, featurizer, consumer and evaluator as processes on one set of topics."""

    settings: ServiceSettings
    name: str
    tmp: Path
    labelled: str
    ports: dict[str, int] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)

    @classmethod
    def create(cls, bootstrap: str, tmp: Path) -> Pipeline:
        name = os.urandom(5).hex()
        settings = ServiceSettings(
            service_name="test", kafka_bootstrap_servers=bootstrap,
            topic_raw=f"ticks.raw.{name}", topic_features=f"ticks.features.{name}",
            topic_predictions=f"predictions.log.{name}", kafka_partitions=3)
        labelled = f"predictions.labelled.{name}"
        ensure_topics(settings, [settings.topic_raw, settings.topic_features,
                                 settings.topic_predictions, labelled])
        ports = {c: free_port() for c in ("api", "featurizer", "consumer", "evaluator")}
        return cls(settings, name, tmp, labelled, ports)

    def kafka_env(self) -> dict[str, str]:
        s = self.settings
        return {"KAFKA_BOOTSTRAP_SERVERS": s.bootstrap, "TOPIC_RAW": s.topic_raw,
                "TOPIC_FEATURES": s.topic_features, "TOPIC_PREDICTIONS": s.topic_predictions,
                "KAFKA_PARTITIONS": "3"}

    def url(self, component: str, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.ports[component]}{path}"

    def start_api(self, models_dir: Path, **env: str) -> None:
        api = Child("cryptovol_api.main", {
            **self.kafka_env(), "API_HOST": "127.0.0.1", "API_PORT": str(self.ports["api"]),
            "MODELS_DIR": str(models_dir), **env}, self.tmp / f"api-{len(self.children)}.log")
        self.children["api"] = api.start()
        wait_http(self.url("api", "/readyz"))

    def start_workers(self, windows: str) -> None:
        kafka, tmp, name = self.kafka_env(), self.tmp, self.name
        workers = {
            "featurizer": Child("cryptovol_featurizer.main", {
                **kafka, "METRICS_PORT": str(self.ports["featurizer"]),
                "METRICS_HOST": "127.0.0.1", "CONSUMER_GROUP": f"featurizer-{name}",
                "PARQUET_ENABLED": "false"}, tmp / "featurizer.log"),
            "consumer": Child("cryptovol_consumer.main", {
                **kafka, "METRICS_PORT": str(self.ports["consumer"]),
                "METRICS_HOST": "127.0.0.1", "CONSUMER_GROUP": f"consumer-{name}",
                "API_URL": self.url("api", ""), "LOG_PREDICTIONS": "true",
                "RATE_LIMIT_RPS": "0", "BATCH_SIZE": "500",
                "PREDICTION_LOG_DIR": str(tmp / "predictions")}, tmp / "consumer.log"),
            "evaluator": Child("cryptovol_evaluator.main", evaluator_env(
                self.settings, name, self.labelled, self.ports["evaluator"], tmp, windows),
                tmp / "evaluator.log"),
        }
        for component, child in workers.items():
            self.children[component] = child.start()
            wait_http(self.url(component, "/healthz"))

    def replay(self, files: list[Path]) -> None:
        producer = make_producer(self.settings)
        for tick in read_ticks(open_recordings(files)):
            producer.send(self.settings.topic_raw, key=tick.product_id.encode(),
                          value=encode_tick(tick))
        producer.flush()
        producer.close()

    def stop(self) -> dict[str, int | None]:
        codes = {c: self.children[c].stop() for c in reversed(list(self.children))}
        for component, child in self.children.items():
            print(component, child.log_tail(1500))
        return codes
