"""Kafka adapters over kafka-python: producer and consumer factories, the
clients of a stream stage (connected with retries), topics, dead letters and a
real reachability check.

Delivery is at least once: producers wait for all in-sync replicas and are
idempotent; consumers never auto-commit, callers commit after their output is
acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner import DefaultPartitioner
from kafka.producer.future import FutureRecordMetadata

from cryptovol.core.timestamps import format_micros, now_micros
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.pacing import Backoff
from cryptovol.runtime.settings import ServiceSettings

log = get_logger(__name__)

DLQ_SUFFIX = ".dlq"
#: A dead letter keeps at most this much of its record: a record near the broker's
#: limit (about 1 MiB) plus the reason headers would not fit, and a dead letter that
#: can never be sent would block its stage. The original size is in ``truncated_from``.
DEAD_LETTER_MAX_BYTES = 512 * 1024


def make_producer(settings: ServiceSettings, **overrides: Any) -> KafkaProducer:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "client_id": settings.service_name,
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": "lz4",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_in_flight_requests_per_connection": 5,
        "retries": 2**31 - 1,
        "request_timeout_ms": 15_000,
        "delivery_timeout_ms": 120_000,
        "partitioner": KeyPartitioner(),
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(
    settings: ServiceSettings,
    group_id: str | None,
    topics: Iterable[str] | None = None,
    **overrides: Any,
) -> KafkaConsumer:
    """A consumer in ``group_id`` with manual commits; values stay raw bytes so
    that a malformed record can be dead-lettered untouched."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "client_id": settings.service_name,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 2000,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def ensure_topics(
    settings: ServiceSettings, names: Iterable[str], *, with_dead_letters: bool = True
) -> list[str]:
    """Create missing topics (and their ``.dlq`` twins); return the ones created."""
    wanted = list(names)
    if with_dead_letters:
        wanted += [n + DLQ_SUFFIX for n in wanted if not n.endswith(DLQ_SUFFIX)]
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id=settings.service_name)
    try:
        existing = set(admin.list_topics())
        missing = [n for n in dict.fromkeys(wanted) if n not in existing]
        created = []
        for name in missing:
            topic = NewTopic(
                name=name,
                num_partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
            try:
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics", extra={"topics": created})
        return created
    finally:
        admin.close()


class DeadLetter:
    """Sends records that cannot be processed to ``<source_topic>.dlq`` with the
    reason in headers, so nothing is lost and the stage keeps running."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer

    def send(
        self,
        source_topic: str,
        raw: bytes,
        reason: str,
        key: bytes | str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> FutureRecordMetadata:
        """Send ``raw`` (its first :data:`DEAD_LETTER_MAX_BYTES`) to
        ``<source_topic>.dlq``; the returned future lets a caller commit its input
        only once the dead letter is acknowledged."""
        if isinstance(key, str):
            key = key.encode()
        headers = [
            ("reason", reason[:500].encode()),
            ("source_topic", source_topic.encode()),
            *((name, value.encode()) for name, value in (extra_headers or {}).items()),
            ("failed_at", format_micros(now_micros()).encode()),
        ]
        if len(raw) > DEAD_LETTER_MAX_BYTES:
            headers.append(("truncated_from", str(len(raw)).encode()))
            raw = raw[:DEAD_LETTER_MAX_BYTES]
        return self.producer.send(source_topic + DLQ_SUFFIX, key=key, value=raw, headers=headers)


def broker_reachable(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a broker answers a metadata request within ``timeout_s``."""
    deadline_ms = max(100, int(timeout_s * 1000))
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            bootstrap_timeout_ms=deadline_ms,
            request_timeout_ms=deadline_ms,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        consumer.topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        consumer.close()


def wait_for_broker(bootstrap: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not broker_reachable(bootstrap, timeout_s=2.0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f}s")
        time.sleep(0.5)


class KeyPartitioner(DefaultPartitioner):
    """The client's default partitioner (murmur2 of the key, as in every Kafka
    client, so records of one key land where any producer would put them),
    remembered per key: its pure-Python hash costs more than the rest of a
    send. Forgotten whenever the cluster metadata changes (partitions added)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, bytes], int] = {}
        self._watched: set[int] = set()

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):  # type: ignore[no-untyped-def]
        if serialized_key is None:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        memo = (topic, serialized_key)
        known = self._memo.get(memo)
        if known is None:
            if id(cluster) not in self._watched:
                self._watched.add(id(cluster))
                cluster.add_listener(lambda _cluster: self._memo.clear())
            known = self._memo[memo] = super().partition(
                topic, key, serialized_key, value, serialized_value, cluster)
        return known


@dataclass
class Clients:
    """The Kafka clients of one stream stage."""

    consumer: KafkaConsumer
    producer: KafkaProducer
    reader: KafkaConsumer | None = None  # group-less, for reading history back

    def close(self, timeout_s: float) -> None:
        self.consumer.close(autocommit=False)
        if self.reader is not None:
            self.reader.close(autocommit=False)
        self.producer.flush(timeout=timeout_s)
        self.producer.close(timeout=timeout_s)


def connect(
    settings: ServiceSettings,
    shutdown: Shutdown,
    *,
    group: str,
    topics: Iterable[str],
    max_poll_records: int = 2000,
    read_back: bool = False,
) -> Clients | None:
    """Create ``topics`` if missing, then the clients; retry with backoff until
    Kafka answers. None when shutdown is requested first."""
    backoff = Backoff(1.0, 30.0)
    while not shutdown.requested:
        made: list[Any] = []
        try:
            try:
                ensure_topics(settings, topics)
            except KafkaError as exc:  # e.g. topics managed by an operator; not fatal
                log.warning("could not ensure topics", extra={"error": repr(exc)})
            made.append(make_producer(settings, max_block_ms=10_000))
            made.append(make_consumer(settings, group, max_poll_records=max_poll_records))
            if read_back:
                made.append(make_consumer(settings, None,
                                          client_id=f"{settings.service_name}-readback"))
            return Clients(made[1], made[0], made[2] if read_back else None)
        except (KafkaError, OSError) as exc:
            for client in made:
                client.close()
            delay = backoff.delay()
            log.warning("Kafka unavailable; retrying", extra={
                "bootstrap": settings.bootstrap, "error": repr(exc),
                "retry_in_s": round(delay, 3)})
            shutdown.wait(delay)
    return None
