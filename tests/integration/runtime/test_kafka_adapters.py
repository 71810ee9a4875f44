"""The Kafka adapters against the real broker: keyed produce, consumer groups,
manual commits, resume after restart, rebalance without loss."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from kafka import TopicPartition

from cryptovol.core.codec import decode_tick, encode_tick
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import now_micros
from cryptovol.runtime.kafka import (
    DEAD_LETTER_MAX_BYTES,
    DeadLetter,
    broker_reachable,
    ensure_topics,
    make_consumer,
    make_producer,
)
from cryptovol.runtime.settings import ServiceSettings


def _produce(settings: ServiceSettings, topic: str, n: int, products: list[str]) -> None:
    producer = make_producer(settings)
    for i in range(n):
        product = products[i % len(products)]
        producer.send(topic, key=product.encode(), value=f"{product}:{i}".encode())
    producer.flush(30)
    producer.close()


def _drain(consumer, want: int, timeout_s: float = 30.0) -> list:
    records = []
    deadline = time.monotonic() + timeout_s
    while len(records) < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_topics_are_created_with_partitions_and_dead_letter_twins(kafka_settings):
    created = ensure_topics(kafka_settings, [kafka_settings.topic_raw])
    assert set(created) == {kafka_settings.topic_raw, kafka_settings.topic_raw + ".dlq"}
    assert ensure_topics(kafka_settings, [kafka_settings.topic_raw]) == []
    consumer = make_consumer(kafka_settings, group_id=None)
    assert consumer.partitions_for_topic(kafka_settings.topic_raw) == {0, 1, 2}
    consumer.close()


def test_keyed_messages_keep_per_key_order_in_one_partition(kafka_settings):
    topic = kafka_settings.topic_raw
    ensure_topics(kafka_settings, [topic])
    products = ["BTC-USD", "ETH-USD", "SOL-USD"]
    _produce(kafka_settings, topic, 300, products)

    consumer = make_consumer(kafka_settings, "order-check", [topic])
    records = _drain(consumer, 300)
    consumer.close()

    assert len(records) == 300
    partitions = defaultdict(set)
    sequences = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        product, index = record.value.decode().split(":")
        assert record.key.decode() == product
        partitions[product].add(record.partition)
        sequences[product].append(int(index))
    assert all(len(p) == 1 for p in partitions.values())
    assert all(seq == sorted(seq) and len(seq) == 100 for seq in sequences.values())


def test_restarted_consumer_resumes_exactly_at_the_committed_offset(kafka_settings):
    topic = kafka_settings.topic_raw
    ensure_topics(kafka_settings, [topic])
    _produce(kafka_settings, topic, 200, ["BTC-USD", "ETH-USD"])

    first = make_consumer(kafka_settings, "resume", [topic], max_poll_records=50)
    seen = _drain(first, 1)
    while len(seen) < 120:
        seen.extend(_drain(first, 1, timeout_s=5))
    first.commit()
    committed = {tp: first.committed(tp) for tp in first.assignment()}
    first.close(autocommit=False)

    second = make_consumer(kafka_settings, "resume", [topic])
    rest = _drain(second, 200 - len(seen))
    second.close()

    values = [r.value for r in seen] + [r.value for r in rest]
    assert len(values) == len(set(values)) == 200
    for tp, offset in committed.items():
        first_after = min((r.offset for r in rest if r.partition == tp.partition), default=None)
        if first_after is not None:
            assert first_after == offset
    assert rest, "the restarted consumer read nothing"


def test_two_consumers_rebalance_without_losing_a_message(kafka_settings):
    topic = kafka_settings.topic_raw
    ensure_topics(kafka_settings, [topic])
    total = 600
    seen: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()

    def consume(name: str, stop_after: threading.Event) -> None:
        consumer = make_consumer(
            kafka_settings, "rebalance", [topic], client_id=name, max_poll_records=20
        )
        while not stop.is_set() and not stop_after.is_set():
            for batch in consumer.poll(timeout_ms=200).values():
                with lock:
                    seen.extend(r.value for r in batch)
            consumer.commit()
        consumer.close(autocommit=False)

    leave_a = threading.Event()
    a = threading.Thread(target=consume, args=("a", leave_a))
    b = threading.Thread(target=consume, args=("b", threading.Event()))
    a.start()
    producer = make_producer(kafka_settings)
    for i in range(total):
        producer.send(topic, key=str(i % 7).encode(), value=str(i).encode())
        if i == 200:
            b.start()  # joins the group: partitions move from a to b
        if i == 400:
            producer.flush()
            leave_a.set()  # a leaves: its partitions move to b
        if i % 50 == 0:
            time.sleep(0.05)
    producer.flush(30)
    producer.close()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if len(set(seen)) >= total:
                break
        time.sleep(0.2)
    stop.set()
    a.join(30)
    b.join(30)
    assert {int(v) for v in seen} == set(range(total))


def test_dead_letters_keep_the_raw_bytes_and_the_reason(kafka_settings):
    ensure_topics(kafka_settings, [kafka_settings.topic_raw])
    producer = make_producer(kafka_settings)
    DeadLetter(producer).send(
        kafka_settings.topic_raw, b"{not json", "malformed json", key="BTC-USD"
    )
    producer.flush(30)
    consumer = make_consumer(kafka_settings, None)
    partitions = [TopicPartition(kafka_settings.topic_raw + ".dlq", p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    records = _drain(consumer, 1)
    consumer.close()
    assert records[0].value == b"{not json"
    headers = dict(records[0].headers)
    assert headers["reason"] == b"malformed json"
    assert headers["source_topic"] == kafka_settings.topic_raw.encode()


def test_a_dead_letter_of_a_record_at_the_size_limit_is_cut_and_still_delivered(
        kafka_settings):
    # the record itself fits the broker's limit; with the reason headers it would not
    ensure_topics(kafka_settings, [kafka_settings.topic_raw])
    producer = make_producer(kafka_settings, compression_type=None)
    huge = b"x" * (1024 * 1024 - 300)
    future = DeadLetter(producer).send(kafka_settings.topic_raw, huge, "invalid JSON: " + "y" * 400)
    producer.flush(30)
    assert future.succeeded()
    consumer = make_consumer(kafka_settings, None)
    partitions = [TopicPartition(kafka_settings.topic_raw + ".dlq", p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    (record,) = _drain(consumer, 1)
    consumer.close()
    assert record.value == huge[:DEAD_LETTER_MAX_BYTES]
    assert dict(record.headers)["truncated_from"] == str(len(huge)).encode()


def test_json_records_round_trip_through_the_broker(kafka_settings):
    topic = kafka_settings.topic_raw
    ensure_topics(kafka_settings, [topic])
    now = now_micros()
    tick = Tick(record_id="BTC-USD:1:0", product_id="BTC-USD", event_us=now, receive_us=now,
                price=90000.5, best_bid=90000.0, best_ask=90001.0)
    producer = make_producer(kafka_settings)
    producer.send(topic, key=b"BTC-USD", value=encode_tick(tick)).get(30)
    producer.close()
    consumer = make_consumer(kafka_settings, "json", [topic])
    (record,) = _drain(consumer, 1)
    consumer.close()
    assert decode_tick(record.value) == tick


def test_reachability_check_is_real(kafka_broker):
    assert broker_reachable(kafka_broker.bootstrap, timeout_s=5)
    assert not broker_reachable("127.0.0.1:9", timeout_s=1)
