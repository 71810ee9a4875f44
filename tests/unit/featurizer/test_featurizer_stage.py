"""The featurizer's stage on the stream worker, on fake Kafka clients: rows follow
acknowledgements, malformed ticks are dead-lettered, a rewind rebuilds the
windows from history and produces the same rows again."""

from __future__ import annotations

from dataclasses import replace

import pytest
from kafka_fakes import Clock, FakeConsumer, FakeProducer, FakeReader
from prometheus_client import REGISTRY

from cryptovol.core.codec import decode_row, encode_row, encode_tick
from cryptovol.core.features import FeatureEngine
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol.runtime.worker import Rewind, StreamWorker
from cryptovol_featurizer.settings import FeaturizerSettings
from cryptovol_featurizer.stage import Featurize

RAW, FEATURES = "ticks.raw", "ticks.features"


@pytest.fixture(scope="module")
def ticks(recordings_dir):  # type: ignore[no-untyped-def]
    first = sorted(recordings_dir.glob("*.ndjson.gz"))[0]
    return list(read_ticks(open_recordings([first])))[:60]


def make(ticks, start: float = 1000.0, bad_at: int = 5):  # type: ignore[no-untyped-def]
    clock = Clock(start)
    consumer = FakeConsumer(RAW, clock)
    for k, tick in enumerate(ticks):
        consumer.add(b"{broken" if k == bad_at else encode_tick(tick),
                     timestamp=tick.event_us // 1000)
    producer = FakeProducer()
    settings = FeaturizerSettings(poll_max_records=10, parquet_enabled=False, topic_raw=RAW,
                                  topic_features=FEATURES)
    stage = Featurize(settings.feature_config(), topic_out=FEATURES, clock=clock,
                      wall_us=lambda: int(clock.now * 1e6))
    config = replace(settings.worker_config(), error_pause_s=0.0)
    worker = StreamWorker(config, consumer, producer, stage,
                          shutdown=Shutdown(install=False), reader=FakeReader(consumer),
                          clock=clock)
    worker.subscribe()
    return worker, consumer, producer, clock


def expected_rows(ticks, bad_at: int = 5) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    engine = FeatureEngine()
    out = {}
    for k, tick in enumerate(ticks):
        if k != bad_at and (res := engine.step(tick)) is not None:
            out[tick.record_id] = encode_row(tick, res)
    return out


def test_rows_are_the_engine_s_and_committed_once_acknowledged(ticks) -> None:  # type: ignore[no-untyped-def]
    worker, consumer, producer, _ = make(ticks)
    before = REGISTRY.get_sample_value("cryptovol_featurizer_rows_emitted_total",
                                       {"product_id": "BTC-USD"}) or 0.0
    worker.step()
    assert consumer.commits == []  # produced, not yet acknowledged
    producer.acknowledge()
    worker.step()  # settles the first batch, produces the second
    assert consumer.commits == [{consumer.tps[0]: 10}]
    while consumer.positions[consumer.tps[0]] < len(ticks):
        worker.step()
        producer.acknowledge()
    worker.step()
    rows = [(k, v) for k, v, _ in producer.to(FEATURES)]
    assert {decode_row(v).record_id: v for _, v in rows} == expected_rows(ticks)
    assert {k for k, _ in rows} == {b"BTC-USD"}  # keyed by product
    assert consumer.committed_offsets[consumer.tps[0]] == len(ticks)
    after = REGISTRY.get_sample_value("cryptovol_featurizer_rows_emitted_total",
                                      {"product_id": "BTC-USD"})
    assert after == before + len(rows)
    ok, health = worker.health()
    assert ok and health["rows_emitted"] == len(rows) and health["products"] == ["BTC-USD"]


def test_malformed_ticks_go_to_the_dead_letter_topic(ticks) -> None:  # type: ignore[no-untyped-def]
    worker, _consumer, producer, _ = make(ticks)
    before = REGISTRY.get_sample_value("cryptovol_featurizer_ticks_dropped_total",
                                       {"reason": "malformed"}) or 0.0
    worker.step()
    producer.acknowledge()
    worker.step()
    [(key, value, headers)] = producer.to(RAW + ".dlq")
    assert (key, value) == (b"BTC-USD", b"{broken")
    assert headers["source_offset"] == "0:5" and "invalid JSON" in headers["reason"]
    assert REGISTRY.get_sample_value("cryptovol_featurizer_ticks_dropped_total",
                                     {"reason": "malformed"}) == before + 1


def test_a_failed_produce_rewinds_and_rebuilds_the_same_rows(ticks) -> None:  # type: ignore[no-untyped-def]
    worker, consumer, producer, _ = make(ticks)
    worker.step()
    producer.acknowledge()
    worker.step()  # commits 10; the second batch is in flight
    producer.fail_next_flush = True
    with pytest.raises(Rewind):
        worker._settle(wait=True)  # what the loop does with too many batches in flight
    worker.rewind("broker said no")
    assert consumer.commits[-1] == {consumer.tps[0]: 10}
    assert consumer.positions[consumer.tps[0]] == 10
    assert worker.stats.rewinds == 1 and not worker.stage.partitions
    while consumer.positions[consumer.tps[0]] < len(ticks):
        worker.step()
        producer.acknowledge()
    worker.step()
    worker.close()
    assert consumer.committed_offsets[consumer.tps[0]] == len(ticks)
    rows: dict[str, bytes] = {}
    for _, value, _ in producer.to(FEATURES):
        rid = decode_row(value).record_id
        assert rows.setdefault(rid, value) == value  # a replayed row is the same row
    assert rows == expected_rows(ticks)
    assert worker.stats.restores == 2  # at the start, and after the rewind from history


@pytest.mark.parametrize("start", [0.0, 1e9])  # far below or above the real clock
def test_health_reads_only_the_injected_clock(ticks, start: float) -> None:  # type: ignore[no-untyped-def]
    worker, _consumer, _producer, clock = make(ticks, start=start)
    assert worker.health()[0] is True
    clock.now += worker.config.stall_s + 1
    assert worker.health()[0] is False
