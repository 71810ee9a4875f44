"""Reading what the ledger accounts for: topics up to a snapshot of their end
offsets, consumer-group offsets, and the consumer's fallback prediction files.

Consistency on a running stack: the groups' committed offsets are read first,
the topics' end offsets after. A stage commits an input offset only once its
output is acknowledged, so every output due for an input below the committed
offset is already below the end offsets read later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition

from cryptovol.devtools.ledger.accounts import Record

FETCH_IDLE_TIMEOUT_S = 30.0


def _consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         client_id="cryptovol-ledger", max_poll_records=5000,
                         fetch_max_bytes=64 * 1024 * 1024,
                         max_partition_fetch_bytes=16 * 1024 * 1024)


def end_offsets(bootstrap: str, topics: list[str]) -> dict[str, dict[int, int]]:
    """topic -> partition -> end offset (an absent topic has no partitions)."""
    consumer = _consumer(bootstrap)
    try:
        out: dict[str, dict[int, int]] = {}
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            ends = consumer.end_offsets(tps) if tps else {}
            out[topic] = {tp.partition: offset for tp, offset in ends.items()}
        return out
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """partition -> next offset the group will read (absent: nothing committed)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cryptovol-ledger")
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0}


def read_topic(bootstrap: str, topic: str, ends: dict[int, int],
               progress: Callable[[int], None] | None = None) -> Iterator[Record]:
    """Every record of ``topic`` from the beginning up to ``ends``, partition by
    partition in offset order."""
    consumer = _consumer(bootstrap)
    try:
        for partition, end in sorted(ends.items()):
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            position = consumer.position(tp)
            idle_since = time.monotonic()
            while position < end:
                batch = consumer.poll(timeout_ms=1000).get(tp, [])
                if not batch:
                    if time.monotonic() - idle_since > FETCH_IDLE_TIMEOUT_S:
                        raise TimeoutError(f"{topic}[{partition}]: no records at offset "
                                           f"{position} (end {end})")
                    continue
                idle_since = time.monotonic()
                for r in batch:
                    if r.offset >= end:
                        break
                    yield Record(r.partition, r.offset, r.value, r.key, tuple(r.headers or ()),
                                 r.timestamp)
                position = consumer.position(tp)  # past control records, too
                if progress is not None:
                    progress(len(batch))
    finally:
        consumer.close()


def prediction_files(folder: Path | None) -> list[Path]:
    """The consumer's fallback files (``predictions-YYYYMMDD.ndjson``), oldest first."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(folder.glob("predictions-*.ndjson"))


def read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip(b"\n")
