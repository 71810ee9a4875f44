"""Every tick the fake exchange sends arrives in ``ticks.raw`` exactly once and in
order per product: across forced disconnects, malformed and unknown messages, and a
15 s broker outage (real Kafka, real sockets).

Why no duplicates can appear here: each tick is handed to the idempotent producer
once per process (the spool only resends records the producer itself reported as
failed), and the producer's own retries, including those across the broker restart,
carry the same producer id and sequence numbers, so the broker discards copies it
already wrote. Duplicates are possible only when the ingest process itself restarts
with unacknowledged ticks in its spool (docs/ingest.md); these tests count every
record_id to prove none appear otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
from kafka import TopicPartition

from cryptovol.core.codec import decode_tick
from cryptovol.devtools.broker import LocalBroker
from cryptovol.devtools.fake_exchange import MALFORMED, FakeExchangeThread, Faults
from cryptovol.devtools.net import free_port
from cryptovol.runtime.kafka import make_consumer
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol.runtime.settings import ServiceSettings
from cryptovol_ingest.metrics import IngestMetrics, isolated_metrics
from cryptovol_ingest.service import IngestService
from cryptovol_ingest.settings import IngestSettings

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "data" / "coinbase-ticker"
SMALL = DATA / "ticks_BTCUSD_20251130_235646.ndjson.gz"  # 159 ticks
MEDIUM = DATA / "ticks_BTCUSD_20251206_013105.ndjson.gz"  # 1034 ticks
LONG = DATA / "ticks_BTCUSD_20251206_011247.ndjson.gz"  # 3671 ticks over 18 minutes
PRODUCTS = ["BTC-USD", "ETH-USD"]  # ETH-USD mirrors the recorded BTC-USD data


def ingest_settings(kafka: ServiceSettings, tmp_path: Path, url: str = "",
                    **overrides: object) -> IngestSettings:
    fields: dict = {
        "kafka_bootstrap_servers": kafka.bootstrap, "topic_raw": kafka.topic_raw,
        "coinbase_ws_url": url, "products": PRODUCTS, "data_dir": tmp_path, "metrics_port": 0,
        "backoff_base_s": 0.05, "backoff_cap_s": 1.0}
    return IngestSettings(**{**fields, **overrides})


@contextmanager
def running(settings: IngestSettings, metrics: IngestMetrics) -> Iterator[IngestService]:
    service = IngestService(settings, metrics=metrics)
    shutdown = Shutdown(install=False)
    thread = threading.Thread(target=service.run, args=(shutdown,), name="ingest")
    thread.start()
    try:
        yield service
    finally:
        shutdown.request()
        thread.join(60)
        assert not thread.is_alive()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_topic(settings: ServiceSettings, topic: str, expected: int,
               timeout: float = 60) -> list:
    """All records of ``topic`` (at least ``expected``, plus anything behind them)."""
    consumer = make_consumer(settings, None)
    try:
        partitions = [TopicPartition(topic, p) for p in
                      sorted(consumer.partitions_for_topic(topic) or range(3))]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        records: list = []
        deadline = time.monotonic() + timeout
        quiet_polls = 0
        while time.monotonic() < deadline and (len(records) < expected or quiet_polls < 2):
            batch = consumer.poll(timeout_ms=500)
            got = [r for recs in batch.values() for r in recs]
            records.extend(got)
            quiet_polls = 0 if got else quiet_polls + 1
        return records
    finally:
        consumer.close()


def assert_exactly_once_in_order(records: list, sent_ids: list[str]) -> None:
    ids = [orjson.loads(r.value)["record_id"] for r in records]
    counts = Counter(ids)
    duplicated = {i: n for i, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} ticks arrived more than once"
    assert set(ids) == set(sent_ids), (
        f"missing {len(set(sent_ids) - set(ids))}, unexpected {len(set(ids) - set(sent_ids))}")
    for product in {i.split(":")[0] for i in sent_ids}:
        mine = [r for r in records if r.key == product.encode()]
        assert len({r.partition for r in mine}) == 1  # one product, one partition
        in_topic = [orjson.loads(r.value)["record_id"]
                    for r in sorted(mine, key=lambda r: r.offset)]
        assert in_topic == [i for i in sent_ids if i.startswith(product + ":")]


def value(counter: object) -> float:
    return counter._value.get()  # type: ignore[attr-defined]


def test_three_forced_disconnects_lose_and_duplicate_nothing(
        kafka_settings: ServiceSettings, tmp_path: Path) -> None:
    faults = Faults(drop_after=300, drops=3, skip_every=40, skip_by=2)
    metrics = isolated_metrics()
    with FakeExchangeThread(files=[MEDIUM], faults=faults, mirror_products=PRODUCTS[1:]) as fx:
        settings = ingest_settings(kafka_settings, tmp_path, fx.url)
        with running(settings, metrics) as service:
            assert fx.wait_finished(120)
            exchange = fx.exchange
            assert service.publisher.wait_idle(60)
            wait_for(lambda: value(metrics.published("ETH-USD")) + value(
                metrics.published("BTC-USD")) == exchange.ticks_sent, 10, "published metric")
            health = httpx.get(f"http://127.0.0.1:{service.http_port}/health").json()
    assert exchange.drops_done == 3 and exchange.ticks_sent == 2 * 1034
    assert value(metrics.reconnects.labels(reason="closed")) == 3
    assert value(metrics.sequence_gaps) == exchange.sequence_skipped > 0  # counted exactly
    records = read_topic(kafka_settings, settings.topic_raw, exchange.ticks_sent)
    assert_exactly_once_in_order(records, exchange.sent_ids)
    assert health["status"] == "ok" and health["kafka"] == "publishing"
    assert health["connections"] == 4


def test_malformed_and_unknown_messages_are_counted_dead_lettered_and_skipped(
        kafka_settings: ServiceSettings, tmp_path: Path) -> None:
    faults = Faults(malformed_every=7, unknown_every=11, skip_every=13, skip_by=1)
    metrics = isolated_metrics()
    with FakeExchangeThread(files=[MEDIUM], faults=faults, mirror_products=PRODUCTS[1:]) as fx:
        settings = ingest_settings(kafka_settings, tmp_path, fx.url)
        with running(settings, metrics) as service:
            assert fx.wait_finished(120)
            assert service.publisher.wait_idle(60)
            wait_for(lambda: not service.publisher._dead_letters, 10, "dead letters sent")
    exchange = fx.exchange
    records = read_topic(kafka_settings, settings.topic_raw, exchange.ticks_sent)
    assert_exactly_once_in_order(records, exchange.sent_ids)
    malformed = sum(value(metrics.malformed.labels(reason=r))
                    for r in ("invalid_json", "not_an_object", "bad_envelope"))
    assert malformed == exchange.malformed_sent > 0
    unknown = value(metrics.unknown.labels(type="status")) + value(
        metrics.unknown.labels(type="notice"))
    assert unknown == exchange.unknown_sent > 0
    assert value(metrics.sequence_gaps) == exchange.sequence_skipped > 0
    dead = read_topic(kafka_settings, settings.topic_raw + ".dlq", exchange.malformed_sent)
    assert len(dead) == exchange.malformed_sent
    assert {r.value for r in dead} == set(MALFORMED)  # the untouched bytes
    assert all(dict(r.headers)["reason"] for r in dead)


def test_a_15_second_broker_outage_is_spooled_then_drained(tmp_path: Path) -> None:
    broker = LocalBroker(port=free_port(), data_dir=tmp_path / "kafka")
    broker.start()
    try:
        kafka = ServiceSettings(kafka_bootstrap_servers=broker.bootstrap,
                                topic_raw="ticks.raw.outage")
        metrics = isolated_metrics()
        with FakeExchangeThread(files=[LONG], speed=40.0,
                                mirror_products=PRODUCTS[1:]) as fx:
            settings = ingest_settings(kafka, tmp_path / "ingest", fx.url,
                                       kafka_ack_timeout_s=3.0)
            with running(settings, metrics) as service:
                publisher = service.publisher
                wait_for(lambda: publisher.acked >= 500, 60, "ticks before the outage")
                broker.stop()
                time.sleep(15)  # the outage: the stream goes on meanwhile
                during = fx.exchange.ticks_sent
                assert publisher.paused and publisher.outages == 1
                broker.start()
                assert fx.wait_finished(180)
                assert publisher.wait_idle(120)
                assert not publisher.paused
        exchange = fx.exchange
        assert exchange.ticks_sent == 2 * 3671 > during
        assert publisher.max_spool_depth > 1000  # really spooled ...
        assert service.spool.unacked == 0  # ... and drained
        assert value(metrics.spool_dropped) == 0
        records = read_topic(kafka, kafka.topic_raw, exchange.ticks_sent)
        assert_exactly_once_in_order(records, exchange.sent_ids)
    finally:
        broker.stop()


def test_replay_command_publishes_exactly_the_offline_ticks(
        kafka_settings: ServiceSettings, tmp_path: Path) -> None:
    files = [SMALL, MEDIUM]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap,
           "TOPIC_RAW": kafka_settings.topic_raw, "DATA_DIR": str(tmp_path), "METRICS_PORT": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "cryptovol_ingest.main", "--source", "replay", "--speed", "max",
         "--files", *map(str, files)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    offline = list(read_ticks(open_recordings(files)))
    records = read_topic(kafka_settings, kafka_settings.topic_raw, len(offline))
    published = sorted((decode_tick(r.value) for r in records),
                       key=lambda t: offline.index(t) if t in offline else -1)
    assert published == offline


def test_the_raw_archive_replays_to_the_same_ticks(
        kafka_settings: ServiceSettings, tmp_path: Path) -> None:
    live_metrics = isolated_metrics()
    with FakeExchangeThread(files=[SMALL], faults=Faults(malformed_every=20)) as fx:
        live = ingest_settings(kafka_settings, tmp_path / "live", fx.url, save_raw=True,
                               products=["BTC-USD"])
        with running(live, live_metrics) as service:
            assert fx.wait_finished(60)
            assert service.publisher.wait_idle(60)
    raw_files = list((tmp_path / "live" / "raw").glob("*.ndjson"))
    assert raw_files
    replay = ingest_settings(kafka_settings, tmp_path / "replay", source="replay",
                             replay_files=[tmp_path / "live" / "raw"], replay_speed="max",
                             topic_raw=kafka_settings.topic_raw + ".replayed")
    replay_metrics = isolated_metrics()
    assert IngestService(replay, metrics=replay_metrics).run(Shutdown(install=False),
                                                             serve_metrics=False) == 0
    live_ticks = [decode_tick(r.value) for r in
                  read_topic(kafka_settings, live.topic_raw, fx.exchange.ticks_sent)]
    replayed = [decode_tick(r.value) for r in
                read_topic(kafka_settings, replay.topic_raw, fx.exchange.ticks_sent)]
    assert [t.record_id for t in live_ticks] == fx.exchange.sent_ids
    assert [t.record_id for t in replayed] == fx.exchange.sent_ids
    assert [t._replace(source="live") for t in replayed] == live_ticks
    assert value(replay_metrics.malformed.labels(reason="invalid_json")) + value(
        replay_metrics.malformed.labels(reason="not_an_object")) + value(
        replay_metrics.malformed.labels(reason="bad_envelope")) == fx.exchange.malformed_sent


def test_the_command_serves_every_documented_metric_and_stops_on_sigterm(
        kafka_settings: ServiceSettings, tmp_path: Path) -> None:
    documented = [line.split("`")[1] for line in
                  (REPO / "docs" / "metrics.md").read_text().split("## ingest")[1]
                  .split("## ")[0].splitlines() if line.startswith("| `cryptovol_")]
    assert len(documented) == 11
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap,
           "TOPIC_RAW": kafka_settings.topic_raw, "DATA_DIR": str(tmp_path),
           "METRICS_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryptovol_ingest.main", "--source", "replay", "--speed", "5",
         "--loop", "--files", str(SMALL)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        def scrape() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return ""

        wait_for(lambda: "cryptovol_ingest_ticks_published_total{" in scrape(), 60,
                 "a published tick")
        text = scrape()
        missing = [name for name in documented if name not in text]
        assert not missing
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        assert ready.status_code == 200 and ready.json()["source"] == "replay"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert '"msg":"ingest stopped"' in stderr
