"""The consumer loop on fakes: batching, commit-after-record, warm-up rule,
dead letters, outage with retries and breaker, bad-row isolation, shutdown."""

from __future__ import annotations

import pytest
from consumer_fakes import (
    TOPIC,
    Clock,
    FakeApi,
    FakeConsumer,
    FakeProducer,
    RecordingSink,
    feature_bytes,
)
from prometheus_client import REGISTRY

from cryptovol.core.schemas import PredictionRecord
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol_consumer import metrics
from cryptovol_consumer.breaker import BreakerState
from cryptovol_consumer.service import Interrupted, PredictionService
from cryptovol_consumer.settings import ConsumerSettings


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Harness:
    def __init__(
        self, partitions: int = 1, outage: int = 0, leak: bool = False,
        clock_start: float = 1000.0, **settings: object,
    ) -> None:
        self.clock = Clock(clock_start)
        self.consumer = FakeConsumer(self.clock, partitions, leak_after_pause=leak)
        self.producer = FakeProducer()
        self.api = FakeApi(self.clock, outage=outage)
        self.sink = RecordingSink(self.consumer)
        self.shutdown = Shutdown(install=False)
        values: dict[str, object] = {
            "topic_features": TOPIC, "batch_size": 100, "batch_linger_ms": 50,
            "rate_limit_rps": 0, "retry_base_s": 0.1, "retry_max_s": 2.0,
            "breaker_failures": 3, "breaker_reset_s": 1.0,
        }  # fmt: skip
        values.update(settings)
        self.service = PredictionService(
            ConsumerSettings(**values),  # type: ignore[arg-type]
            self.consumer, self.producer, self.api, self.sink, self.shutdown,  # type: ignore[arg-type]
            clock=self.clock,
        )  # fmt: skip
        self.consumer.on_idle = self._stop_when_drained
        self.idle_polls = 0
        self._batches_seen = -1

    def _stop_when_drained(self) -> None:
        """Stop once every record is read and the loop is idle with nothing in
        flight (polls are idle only between batches or during linger)."""
        c = self.consumer
        read_all = all(c.positions[tp] == len(log) for tp, log in c.logs.items())
        if read_all and self.service.stats.batches == self._batches_seen:
            self.idle_polls += 1
        self._batches_seen = self.service.stats.batches
        if read_all and self.idle_polls >= 3:
            self.shutdown.request()

    def run(self) -> None:
        self.service.run()

    def predicted_ids(self) -> list[str]:
        return [r.record_id for r in self.sink.records]

    def dead_letters(self) -> list[tuple[bytes, dict]]:
        return [
            (value, {k: v.decode() for k, v in headers})
            for topic, _key, value, headers in self.producer.sent
            if topic == TOPIC + ".dlq"
        ]


def _predictions() -> float:
    return _metric(
        "cryptovol_consumer_predictions_total", model_variant="ml", model_version="v-fake"
    )


def test_every_row_is_predicted_once_and_committed_after_it_is_recorded() -> None:
    h = Harness(partitions=3)
    for i in range(250):
        h.consumer.add(feature_bytes(i, x=float(i % 100)), partition=i % 3)
    before = _predictions()
    h.run()
    assert sorted(h.predicted_ids()) == sorted(f"BTC-USD:{i}:0" for i in range(250))
    assert h.consumer.committed == {tp: len(log) for tp, log in h.consumer.logs.items()}
    assert h.sink.early_commits == []
    assert all(len(call) <= 100 for call in h.api.calls)
    assert _predictions() == before + 250
    record = h.sink.records[7]
    assert isinstance(record, PredictionRecord)
    assert record.model_variant == "ml" and record.model_version == "v-fake"
    assert record.threshold == 0.5 and record.spike == (record.score >= 0.5)
    assert record.api_latency_ms == 2.0 and record.e2e_latency_ms > 0
    assert _metric("cryptovol_consumer_last_prediction_timestamp_seconds") > 0


def test_batches_wait_for_linger_or_size() -> None:
    h = Harness(batch_size=10, batch_linger_ms=1000)
    for i in range(25):
        h.consumer.add(feature_bytes(i))
    assert len(h.service._collect()) == 10  # full batch: no waiting
    assert len(h.service._collect()) == 10
    start = h.clock.now
    assert len(h.service._collect()) == 5  # partial batch: returned after the linger
    assert h.clock.now - start == pytest.approx(1.0, abs=0.01)
    assert h.service._collect() == []  # idle


def test_warmup_rows_are_skipped_but_committed() -> None:
    skipped = metrics.ROWS_SKIPPED.labels(reason="warmup")
    before = skipped._value.get()
    h = Harness()
    h.consumer.add(feature_bytes(1, warmup=True))
    h.consumer.add(feature_bytes(2))
    h.consumer.add(feature_bytes(3, warmup=True))
    h.run()
    assert h.predicted_ids() == ["BTC-USD:2:0"]
    assert h.service.stats.skipped_warmup == 2
    assert skipped._value.get() - before == 2
    assert h.consumer.committed == {h.consumer.tps[0]: 3}


def test_warmup_rows_can_be_scored_on_request() -> None:
    h = Harness(predict_warmup=True)
    h.consumer.add(feature_bytes(1, warmup=True))
    h.run()
    assert h.predicted_ids() == ["BTC-USD:1:0"]


def test_malformed_rows_are_dead_lettered_and_committed() -> None:
    h = Harness()
    h.consumer.add(b"{broken", key=b"BTC-USD")
    h.consumer.add(feature_bytes(1))
    h.consumer.add(None, key=None)
    h.run()
    assert h.predicted_ids() == ["BTC-USD:1:0"]
    dead = h.dead_letters()
    assert [value for value, _ in dead] == [b"{broken", b""]
    assert dead[0][1]["reason"].startswith("invalid JSON")
    assert dead[0][1]["source_topic"] == TOPIC
    assert dead[1][1]["reason"] == "empty message"
    assert h.producer.flushes >= 1  # dead letters acknowledged before the commit
    assert h.consumer.committed == {h.consumer.tps[0]: 3}
    assert h.service.stats.dead_lettered == 2


def test_rows_the_api_rejects_are_isolated_and_dead_lettered() -> None:
    h = Harness()
    for i in range(10):
        h.consumer.add(feature_bytes(i, x=float(i), **({"bad": 1.0} if i == 6 else {})))
    before = _metric("cryptovol_consumer_api_errors_total", reason="http_4xx")
    h.run()
    assert sorted(h.predicted_ids()) == sorted(f"BTC-USD:{i}:0" for i in range(10) if i != 6)
    [(value, headers)] = h.dead_letters()
    assert b"BTC-USD:6:0" in value
    assert headers["reason"].startswith("rejected by /predict")
    assert _metric("cryptovol_consumer_api_errors_total", reason="http_4xx") > before
    assert h.service.breaker.state is BreakerState.CLOSED  # a 4xx is not an outage
    assert h.consumer.committed == {h.consumer.tps[0]: 10}


def test_api_outage_retries_with_breaker_and_loses_nothing() -> None:
    h = Harness(outage=8)
    for i in range(30):
        h.consumer.add(feature_bytes(i))
    states: list[int] = []
    h.service.breaker._on_change = lambda s: states.append(int(s))
    before = _metric("cryptovol_consumer_api_errors_total", reason="connect")
    h.run()
    assert sorted(h.predicted_ids()) == sorted(f"BTC-USD:{i}:0" for i in range(30))
    assert _metric("cryptovol_consumer_api_errors_total", reason="connect") == before + 8
    assert int(BreakerState.OPEN) in states and states[-1] == int(BreakerState.CLOSED)
    assert h.consumer.pause_calls > 0 and h.consumer.paused() == set()
    assert h.consumer.committed == {h.consumer.tps[0]: 30}
    assert h.sink.early_commits == []


def test_breaker_state_is_exported_and_reported_by_health() -> None:
    h = Harness(outage=100, breaker_failures=2)
    h.consumer.add(feature_bytes(1))
    h.service.breaker.record_failure()
    h.service.breaker.record_failure()
    assert _metric("cryptovol_consumer_breaker_state") == 2.0
    ok, details = h.service.health()
    assert not ok and details["breaker"] == "open"
    h.service.breaker.record_success()
    assert _metric("cryptovol_consumer_breaker_state") == 0.0
    assert h.service.health()[0] is True


@pytest.mark.parametrize("clock_start", [0.0, 1000.0, 1e9])
def test_health_reads_only_the_injected_clock(clock_start: float) -> None:
    # The real monotonic clock counts from boot: a fake one far below or above
    # it must not make a fresh service look stalled (or a stalled one fresh).
    h = Harness(clock_start=clock_start)
    assert h.service.health()[0] is True
    h.clock.now += 3600
    ok, details = h.service.health()
    assert not ok and details["loop_stalled"] is True


def test_shutdown_during_an_outage_commits_nothing() -> None:
    h = Harness(outage=10**6)
    for i in range(5):
        h.consumer.add(feature_bytes(i))
    batch = h.service._collect()
    start = h.clock.now

    def stop_after_a_while() -> None:
        if h.clock.now - start > 30:
            h.shutdown.request()

    h.consumer.on_idle = None
    original_poll = h.consumer.poll

    def poll(timeout_ms: int = 0, max_records: int | None = None) -> dict:
        stop_after_a_while()
        return original_poll(timeout_ms, max_records)

    h.consumer.poll = poll  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        h.service.process(batch)
    assert h.consumer.committed == {}
    assert h.sink.records == []
    assert h.consumer.paused() == set()


def test_records_returned_while_waiting_are_put_back() -> None:
    # records a poll returns during a wait (a partition assigned meanwhile, a
    # buffer fetched before the pause) must be re-read later, not skipped
    h = Harness(outage=4, leak=True, batch_size=5)
    for i in range(20):
        h.consumer.add(feature_bytes(i))
    h.run()
    assert sorted(h.predicted_ids()) == sorted(f"BTC-USD:{i}:0" for i in range(20))
    assert len(h.predicted_ids()) == 20
    assert h.consumer.pause_calls >= 4
    assert h.consumer.committed == {h.consumer.tps[0]: 20}


def test_a_failing_sink_is_retried_before_committing() -> None:
    h = Harness()
    h.sink.fail_times = 2
    h.consumer.add(feature_bytes(1))
    h.run()
    assert h.predicted_ids() == ["BTC-USD:1:0"]
    assert h.consumer.committed == {h.consumer.tps[0]: 1}


def test_lag_gauge_per_partition() -> None:
    h = Harness(partitions=2)
    for i in range(7):
        h.consumer.add(feature_bytes(i), partition=0)
    h.consumer.positions[h.consumer.tps[0]] = 2
    h.service._update_lag(force=True)
    assert _metric("cryptovol_consumer_lag", partition="0") == 5
    assert _metric("cryptovol_consumer_lag", partition="1") == 0


def test_spike_series_exists_before_the_first_spike() -> None:
    metrics.SPIKES.clear()  # no series left over from other tests
    h = Harness()
    for i in range(5):
        h.consumer.add(feature_bytes(i, x=1.0))  # scores 0.01: no spike
    h.run()
    labels = {"model_variant": "ml", "model_version": "v-fake"}
    assert REGISTRY.get_sample_value("cryptovol_consumer_spikes_total", labels) is not None
