"""The consumer on the stream worker, on fakes: batching, commit-after-record,
warm-up rule, dead letters, outage with retries and breaker, bad-row isolation,
shutdown."""

from __future__ import annotations

import pytest
from consumer_fakes import T0, TOPIC, FakeApi, RecordingSink, feature_bytes
from kafka_fakes import Clock, FakeConsumer, FakeProducer
from prometheus_client import REGISTRY

from cryptovol.core.timestamps import to_micros
from cryptovol.runtime.kafka import DeadLetter
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.pacing import RateLimiter
from cryptovol.runtime.worker import StreamWorker
from cryptovol_consumer import metrics
from cryptovol_consumer.breaker import BreakerState, CircuitBreaker
from cryptovol_consumer.predictor import Predictor
from cryptovol_consumer.settings import ConsumerSettings
from cryptovol_consumer.stage import FeatureRows


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Harness:
    def __init__(
        self, partitions: int = 1, outage: int = 0, leak: bool = False,
        clock_start: float = 1000.0, rate: float = 0.0, shadow: bool = False,
        **settings: object,
    ) -> None:
        self.clock = Clock(clock_start)
        self.consumer = FakeConsumer(TOPIC, self.clock, partitions, leak_after_pause=leak)
        self.producer = FakeProducer(auto_ack=True)
        self.api = FakeApi(self.clock, outage=outage, shadow=shadow)
        self.sink = RecordingSink(self.consumer)
        self.shutdown = Shutdown(install=False)
        values: dict[str, object] = {
            "topic_features": TOPIC, "batch_size": 100, "batch_linger_ms": 50,
            "retry_base_s": 0.1, "retry_max_s": 2.0, "breaker_failures": 3,
            "breaker_reset_s": 1.0,
        }  # fmt: skip
        values.update(settings)
        self.settings = ConsumerSettings(**values)  # type: ignore[arg-type]
        self.breaker = CircuitBreaker(self.settings.breaker_failures,
                                      self.settings.breaker_reset_s, clock=self.clock)
        self.predictor = Predictor(
            self.api, self.sink, DeadLetter(self.producer), topic=TOPIC,  # type: ignore[arg-type]
            breaker=self.breaker, limiter=RateLimiter(rate, clock=self.clock),
            wall_us=lambda: to_micros(T0) + int(self.clock.now * 1e6))  # rows are from T0 on
        self.stage = FeatureRows(self.settings.predict_warmup)
        self.worker = StreamWorker(self.settings.worker_config(), self.consumer, self.producer,
                                   self.stage, [self.predictor], shutdown=self.shutdown,
                                   lag_gauge=metrics.LAG, clock=self.clock)
        self.consumer.on_idle = self._stop_when_drained
        self.idle_polls = 0

    def _stop_when_drained(self) -> None:
        """Stop after a few idle polls once every record is read and recorded."""
        c = self.consumer
        read_all = all(c.positions[tp] == len(log) for tp, log in c.logs.items())
        if read_all and not len(self.predictor):
            self.idle_polls += 1
        if self.idle_polls >= 3:
            self.shutdown.request()

    def run(self) -> None:
        self.worker.run()

    def committed(self) -> dict:
        return self.consumer.committed_offsets

    def predicted_ids(self) -> list[str]:
        return [r.record_id for r in self.sink.records]

    def dead_letters(self) -> list[tuple[bytes, dict]]:
        return [(value, headers) for _key, value, headers in self.producer.to(TOPIC + ".dlq")]


def _predictions() -> float:
    return _metric(
        "cryptovol_consumer_predictions_total", model_variant="ml", model_version="v-fake"
    )


def test_every_row_is_predicted_once_and_committed_after_it_is_recorded() -> None:
    h = Harness(partitions=2)
    for i in range(250):
        h.consumer.add(feature_bytes(i, x=float(i % 100)), partition=i % 2)
    before = _predictions()
    h.run()
    assert sorted(h.predicted_ids()) == sorted(f"BTC-USD:{i}:0" for i in range(250))
    assert len(h.predicted_ids()) == 250
    assert h.sink.early_commits == []
    assert h.committed() == {h.consumer.tps[0]: 125, h.consumer.tps[1]: 125}
    assert _predictions() == before + 250
    assert all(len(call) <= 100 for call in h.api.calls)
    first = h.sink.records[0]
    assert first.model_variant == "ml" and first.threshold == 0.5
    assert first.e2e_latency_ms > 0 and first.api_latency_ms == 2.0


def test_shadow_scores_are_recorded_with_each_prediction() -> None:
    h = Harness(shadow=True)
    for i in range(30):
        h.consumer.add(feature_bytes(i, x=float(i)))
    h.run()
    assert len(h.sink.records) == 30
    for record in h.sink.records:
        (shadow,) = record.shadows
        assert (shadow.model_variant, shadow.model_version, shadow.threshold) == (
            "baseline", "v-shadow", 0.4)
        assert shadow.score == pytest.approx(1 - record.score)
        assert shadow.spike == (shadow.score >= 0.4)
    assert Harness().api.shadow is False  # without MODEL_SHADOW, none: shadows == []


def test_batches_wait_for_linger_or_size() -> None:
    h = Harness(batch_size=10, batch_linger_ms=100)
    for i in range(25):
        h.consumer.add(feature_bytes(i))
    h.run()
    assert [len(c) for c in h.api.calls] == [10, 10, 5]


def test_warmup_rows_are_skipped_but_committed() -> None:
    h = Harness()
    before = _metric("cryptovol_consumer_rows_skipped_total", reason="warmup")
    h.consumer.add(feature_bytes(1, warmup=True))
    h.consumer.add(feature_bytes(2))
    h.consumer.add(feature_bytes(3, warmup=True))
    h.run()
    assert h.predicted_ids() == ["BTC-USD:2:0"]
    assert h.committed() == {h.consumer.tps[0]: 3}
    assert h.stage.skipped_warmup == 2
    assert _metric("cryptovol_consumer_rows_skipped_total", reason="warmup") == before + 2


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
    assert dead[0][1]["source_topic"] == TOPIC and dead[0][1]["source_offset"] == "0:0"
    assert dead[1][1]["reason"] == "empty message"
    assert h.committed() == {h.consumer.tps[0]: 3}
    assert h.worker.stats.dead_lettered == 2


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
    assert h.breaker.state is BreakerState.CLOSED  # a 4xx is not an outage
    assert h.producer.flushes >= 1  # the dead letter acknowledged before the commit
    assert h.committed() == {h.consumer.tps[0]: 10}
    assert h.predictor.rejected == 1


def test_api_outage_retries_with_breaker_and_loses_nothing() -> None:
    h = Harness(outage=8)
    for i in range(30):
        h.consumer.add(feature_bytes(i))
    states: list[int] = []
    h.breaker._on_change = lambda s: states.append(int(s))
    before = _metric("cryptovol_consumer_api_errors_total", reason="connect")
    h.run()
    assert sorted(h.predicted_ids()) == sorted(f"BTC-USD:{i}:0" for i in range(30))
    assert _metric("cryptovol_consumer_api_errors_total", reason="connect") == before + 8
    assert int(BreakerState.OPEN) in states and states[-1] == int(BreakerState.CLOSED)
    assert h.consumer.pause_calls > 0 and h.consumer.paused() == set()
    assert h.committed() == {h.consumer.tps[0]: 30}
    assert h.sink.early_commits == []


def test_the_rate_limit_spaces_calls() -> None:
    h = Harness(rate=10.0, batch_size=1, batch_linger_ms=0)
    for i in range(12):
        h.consumer.add(feature_bytes(i))
    start = h.clock.now
    h.run()
    assert len(h.api.calls) == 12
    assert h.clock.now - start >= (12 - 10) / 10.0  # a burst of 10, then 10 a second


def test_breaker_state_is_reported_by_health() -> None:
    h = Harness(outage=100, breaker_failures=2)
    h.breaker.record_failure()
    h.breaker.record_failure()
    ok, details = h.worker.health()
    assert not ok and details["breaker"] == "open"
    h.breaker.record_success()
    ok, details = h.worker.health()
    assert ok and details["breaker"] == "closed"


@pytest.mark.parametrize("clock_start", [0.0, 1000.0, 1e9])
def test_health_reads_only_the_injected_clock(clock_start: float) -> None:
    # The real monotonic clock counts from boot: a fake one far below or above
    # it must not make a fresh service look stalled (or a stalled one fresh).
    h = Harness(clock_start=clock_start)
    assert h.worker.health()[0] is True
    h.clock.now += 3600
    ok, details = h.worker.health()
    assert not ok and details["loop_stalled"] is True


def test_shutdown_during_an_outage_commits_nothing() -> None:
    h = Harness(outage=10**6)
    for i in range(5):
        h.consumer.add(feature_bytes(i))
    start = h.clock.now

    h.consumer.on_idle = None
    poll = h.consumer.poll

    def poll_then_shut_down(timeout_ms: int = 0, max_records: int | None = None) -> dict:
        if h.clock.now - start > 30:
            h.shutdown.request()  # SIGTERM half a minute into the outage
        return poll(timeout_ms, max_records)

    h.consumer.poll = poll_then_shut_down  # type: ignore[method-assign]
    h.run()
    assert h.consumer.commits == []
    assert h.sink.records == []
    assert h.consumer.paused() == set()
    calls = len(h.api.calls)
    assert calls > 3  # it kept trying until shutdown; and made no call after it
    assert h.clock.now - start < 60


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
    assert h.committed() == {h.consumer.tps[0]: 20}


def test_a_failing_record_store_is_retried_before_committing_without_rescoring() -> None:
    h = Harness()
    h.sink.fail_times = 2
    h.consumer.add(feature_bytes(1))
    h.run()
    assert h.predicted_ids() == ["BTC-USD:1:0"]
    assert len(h.api.calls) == 1  # scored once, recorded on the third try
    assert h.committed() == {h.consumer.tps[0]: 1}


def test_lag_gauge_per_partition() -> None:
    h = Harness(partitions=2, batch_size=2, lag_interval_s=0.001)
    for i in range(7):
        h.consumer.add(feature_bytes(i), partition=0)
    h.worker.subscribe()
    h.worker.step()  # reads 2 of partition 0's 7
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
