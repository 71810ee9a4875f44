"""Where prediction records go: Kafka ``predictions.log`` (key = product), or
append-only NDJSON files under ``logs/predictions/`` when Kafka cannot take them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptovol.core.codec import encode_record
from cryptovol.core.schemas import PredictionRecord
from cryptovol.core.timestamps import from_micros, now_micros
from cryptovol.runtime.logs import get_logger
from cryptovol_consumer.metrics import LOG_FALLBACK

log = get_logger(__name__)


class PredictionSink(Protocol):
    def write(self, records: Sequence[PredictionRecord]) -> None:
        """Return once the records are durable; raise if they could not be stored."""


class NullSink:
    """``LOG_PREDICTIONS=false``: predictions only feed the metrics."""

    def write(self, records: Sequence[PredictionRecord]) -> None:
        return None


class FileSink:
    """One NDJSON file per UTC day, appended and fsynced per batch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for_today(self) -> Path:
        return self.folder / f"predictions-{from_micros(now_micros()):%Y%m%d}.ndjson"

    def write(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = b"".join(encode_record(r) + b"\n" for r in records)
        with open(self.path_for_today(), "ab") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())


class KafkaSink:
    """Produces to ``topic`` and waits for the acknowledgements; on any Kafka
    failure the same records go to the fallback file sink instead."""

    def __init__(
        self, producer: Any, topic: str, fallback: FileSink, timeout_s: float = 10.0
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.fallback = fallback
        self.timeout_s = timeout_s

    def write(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        try:
            futures = [
                self.producer.send(self.topic, key=r.product_id.encode(), value=encode_record(r))
                for r in records
            ]
            self.producer.flush(timeout=self.timeout_s)
            for future in futures:
                future.get(timeout=0)  # raises the delivery error, if any
        except Exception as exc:  # Kafka down, timeout, record too large: keep the data
            log.warning(
                "predictions.log unavailable; writing prediction records to files",
                extra={
                    "error": repr(exc),
                    "records": len(records),
                    "dir": str(self.fallback.folder),
                },
            )
            self.fallback.write(records)
            LOG_FALLBACK.inc(len(records))
