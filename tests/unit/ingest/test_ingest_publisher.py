"""The publisher's ordering and no-double-send rules, against a scripted producer."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from cryptovol.core.codec import decode_tick
from cryptovol.core.ticks import Tick, tick_record_id
from cryptovol.core.timestamps import now_micros, to_micros
from cryptovol_ingest.metrics import isolated_metrics
from cryptovol_ingest.publisher import Publisher
from cryptovol_ingest.settings import IngestSettings
from cryptovol_ingest.spool import Spool

T0 = datetime(2025, 12, 6, 1, 0, tzinfo=UTC)


def make_ticks(start: int, n: int, product: str = "BTC-USD") -> list[Tick]:
    out = []
    for i in range(start, start + n):
        t = to_micros(T0 + timedelta(seconds=i))
        out.append(Tick(tick_record_id(product, t), product, t, t, 100.0 + i))
    return out


class FakeFuture:
    """Like kafka-python's future: callbacks added after completion run at once."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.errbacks: list = []
        self.outcome: tuple[bool, object] | None = None

    def add_callback(self, fn) -> None:
        self.callbacks.append(fn)
        if self.outcome and self.outcome[0]:
            fn(self.outcome[1])

    def add_errback(self, fn) -> None:
        self.errbacks.append(fn)
        if self.outcome and not self.outcome[0]:
            fn(self.outcome[1])

    def resolve(self, ok: bool, value: object) -> None:
        self.outcome = (ok, value)
        for fn in self.callbacks if ok else self.errbacks:
            fn(value)


class ScriptedProducer:
    """Records every send; acknowledges only when told to (``auto_ack``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.futures: list[FakeFuture] = []
        self.auto_ack = True
        self.raise_on_send: Exception | None = None
        self.closed = False

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list | None = None) -> FakeFuture:
        if self.raise_on_send is not None:
            raise self.raise_on_send
        future = FakeFuture()
        with self.lock:
            self.sent.append((key, value))
            self.futures.append(future)
        if self.auto_ack:
            self._ack(future)
        return future

    @staticmethod
    def _ack(future: FakeFuture) -> None:
        future.resolve(True, object())

    def ack_all(self) -> None:
        with self.lock:
            futures, self.futures = self.futures, []
        for future in futures:
            self._ack(future)

    def fail_all(self, exc: Exception) -> None:
        with self.lock:
            futures, self.futures = self.futures, []
        for future in futures:
            future.resolve(False, exc)

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def sent_prices(producer: ScriptedProducer) -> list[float]:
    return [decode_tick(v).price for k, v in producer.sent if k]


@pytest.fixture
def settings(tmp_path: Path) -> IngestSettings:
    return IngestSettings(data_dir=tmp_path, kafka_ack_timeout_s=0.3, kafka_probe_interval_s=0.02,
                          shutdown_grace_s=1.0)


class Harness:
    def __init__(self, settings: IngestSettings) -> None:
        self.producer = ScriptedProducer()
        self.reachable = True
        self.metrics = isolated_metrics()
        self.spool = Spool(settings.spool_path, max_bytes=settings.spool_max_bytes)
        self.publisher = Publisher(settings, self.spool, self.metrics,
                                   producer_factory=lambda: self.producer,
                                   probe=lambda: self.reachable, ensure=lambda: None)

    def offer(self, ticks: list[Tick]) -> None:
        for tick in ticks:
            assert self.publisher.offer_ticks([tick], now_micros())


def test_ticks_are_sent_once_in_order_and_counted(settings: IngestSettings) -> None:
    h = Harness(settings)
    h.publisher.start()
    h.offer(make_ticks(0, 50) + make_ticks(50, 50, "ETH-USD"))
    assert h.publisher.wait_idle(10)
    h.publisher.stop()
    assert sent_prices(h.producer) == [100.0 + i for i in range(100)]
    published = h.metrics.ticks_published
    assert published.labels(product_id="BTC-USD")._value.get() == 50
    assert published.labels(product_id="ETH-USD")._value.get() == 50
    assert h.metrics.publish_latency._sum.get() >= 0
    assert h.producer.closed and h.spool.unacked == 0


def test_an_outage_spools_new_ticks_and_never_resends_in_flight_ones(
        settings: IngestSettings) -> None:
    h = Harness(settings)
    h.publisher.start()
    eventually(lambda: h.publisher.producer is not None)
    h.producer.auto_ack = False  # the broker stops answering
    h.reachable = False
    h.offer(make_ticks(0, 10))
    eventually(lambda: h.publisher.paused and h.publisher.outages == 1)
    h.offer(make_ticks(10, 20))  # arrive during the outage: spooled, not sent
    eventually(lambda: h.spool.appended == 30)
    assert sent_prices(h.producer) == [100.0 + i for i in range(10)]
    assert h.spool.unacked == 30
    # the broker returns: the producer delivers what it held, then the spool drains
    h.reachable = True
    h.producer.auto_ack = True
    h.producer.ack_all()
    assert h.publisher.wait_idle(10)
    assert sent_prices(h.producer) == [100.0 + i for i in range(30)]  # each exactly once
    assert h.publisher.max_spool_depth >= 30
    h.publisher.stop()


def test_failed_sends_are_retried_after_the_broker_is_back(settings: IngestSettings) -> None:
    h = Harness(settings)
    h.publisher.start()
    h.offer(make_ticks(0, 5))
    assert h.publisher.wait_idle(10)
    h.producer.raise_on_send = KafkaTimeoutError("buffer full")
    h.reachable = False
    h.offer(make_ticks(5, 5))
    eventually(lambda: h.publisher.paused)
    h.producer.raise_on_send = None
    h.reachable = True
    assert h.publisher.wait_idle(10)
    assert sent_prices(h.producer) == [100.0 + i for i in range(10)]
    h.publisher.stop()


def test_a_retriable_delivery_failure_is_sent_again(settings: IngestSettings) -> None:
    h = Harness(settings)
    h.producer.auto_ack = False
    h.publisher.start()
    h.offer(make_ticks(0, 3))
    eventually(lambda: len(h.producer.sent) == 3)
    h.producer.auto_ack = True
    h.producer.fail_all(NotLeaderForPartitionError("gave up"))
    assert h.publisher.wait_idle(10)
    assert sent_prices(h.producer) == [100.0, 101.0, 102.0] * 2
    h.publisher.stop()


def test_a_failure_between_successes_settles_the_spool(settings: IngestSettings) -> None:
    h = Harness(settings)
    h.producer.auto_ack = False
    h.publisher.start()
    h.offer(make_ticks(0, 3))
    eventually(lambda: len(h.producer.sent) == 3)
    first, *rest = h.producer.futures
    h.producer.futures = []
    h.producer.auto_ack = True
    first.resolve(False, NotLeaderForPartitionError("gave up"))
    for future in rest:
        future.resolve(True, object())
    assert h.publisher.wait_idle(10)
    assert sent_prices(h.producer) == [100.0, 101.0, 102.0, 100.0]
    h.publisher.stop()
    assert Spool(settings.spool_path, max_bytes=1 << 20).unacked == 0  # cursor at the end


def test_unacknowledged_ticks_are_sent_first_by_the_next_run(settings: IngestSettings) -> None:
    h = Harness(settings)
    h.producer.auto_ack = False
    h.publisher.start()
    h.offer(make_ticks(0, 4))
    eventually(lambda: len(h.producer.sent) == 4)
    h.publisher.stop(grace_s=0.1)  # Kafka never acknowledged them
    assert h.spool.unacked == 4

    again = Harness(settings)  # same spool directory
    assert again.spool.unacked == 4
    again.publisher.start()
    again.offer(make_ticks(4, 2))
    assert again.publisher.wait_idle(10)
    assert sent_prices(again.producer) == [100.0 + i for i in range(6)]
    again.publisher.stop()


def test_dead_letters_wait_for_kafka(settings: IngestSettings) -> None:
    h = Harness(settings)
    h.reachable = False
    h.publisher.start()
    assert h.publisher.offer_dead_letter(b"not json", "invalid_json: boom")
    h.offer(make_ticks(0, 2))
    eventually(lambda: h.spool.appended == 2)
    assert h.producer.sent == []
    h.reachable = True
    assert h.publisher.wait_idle(10)
    eventually(lambda: (b"", b"not json") in [(k or b"", v) for k, v in h.producer.sent])
    h.publisher.stop()


def test_spool_bound_drops_loudly(settings: IngestSettings, tmp_path: Path) -> None:
    small = settings.model_copy(update={"spool_max_bytes": 4096})
    h = Harness(small)
    h.reachable = False  # Kafka away from the start
    h.publisher.start()
    h.offer(make_ticks(0, 40))
    eventually(lambda: h.publisher.queue.unfinished_tasks == 0)
    assert h.publisher.dropped > 0
    assert h.metrics.spool_dropped._value.get() == h.publisher.dropped
    assert h.spool.appended + h.publisher.dropped == 40
    h.reachable = True
    assert h.publisher.wait_idle(10)
    assert sent_prices(h.producer) == [100.0 + i for i in range(h.spool.appended)]
    h.publisher.stop()
