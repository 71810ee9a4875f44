"""Labelled predictions as append-only Parquet, for offline analysis
(``cryptovol-train evaluate --labelled DIR`` reads them back).

Files land under ``<root>/product=<id>/date=<YYYY-MM-DD>/part-<first event us>-<id>.parquet``;
one row per graded prediction with its scores as a list of structs (role,
model_variant, model_version, score, threshold, flagged). After a crash the
rows after the last commit may be written again: readers de-duplicate by
``record_id`` (:func:`read_labelled` does).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from cryptovol.core.schemas import LabelledPrediction
from cryptovol.core.timestamps import to_micros
from cryptovol.runtime.parquet import DAY_US, partition_dir, write_new_file

_TIME = pa.timestamp("us", tz="UTC")
SCORE = pa.struct([("role", pa.string()), ("model_variant", pa.string()),
                   ("model_version", pa.string()), ("score", pa.float64()),
                   ("threshold", pa.float64()), ("flagged", pa.bool_())])
SCHEMA = pa.schema([
    ("record_id", pa.string()), ("product_id", pa.string()), ("event_time", _TIME),
    ("predicted_time", _TIME), ("graded_time", _TIME), ("has_label", pa.bool_()),
    ("reason", pa.string()), ("spike", pa.bool_()), ("rv_fwd", pa.float64()),
    ("tau", pa.float64()), ("rv_past", pa.float64()), ("scores", pa.list_(SCORE)),
])


def table_of(messages: Sequence[LabelledPrediction]) -> pa.Table:
    return pa.Table.from_pylist(
        [m.model_dump(exclude={"schema_version"}) for m in messages], schema=SCHEMA)


class LabelledSink:
    """Buffers the graded predictions of acknowledged batches; writes a file per
    product and day when ``max_rows`` are buffered or the oldest waited ``flush_s``."""

    def __init__(self, root: Path, max_rows: int = 20_000, flush_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.max_rows = max_rows
        self.flush_s = flush_s
        self._clock = clock
        self._rows: dict[tuple[str, int], list[LabelledPrediction]] = {}
        self._count = 0
        self._since = clock()
        self.files_written = 0

    def __len__(self) -> int:
        return self._count

    def add(self, messages: Sequence[LabelledPrediction]) -> None:
        if not self._count:
            self._since = self._clock()
        for m in messages:
            us = to_micros(m.event_time)
            self._rows.setdefault((m.product_id, us // DAY_US), []).append(m)
        self._count += len(messages)

    def due(self) -> bool:
        return self._count >= self.max_rows or (
            self._count > 0 and self._clock() - self._since >= self.flush_s)

    def flush(self) -> list[Path]:
        written = []
        for (product, _day), rows in sorted(self._rows.items()):
            first_us = to_micros(rows[0].event_time)
            name = f"part-{first_us}-{uuid.uuid4().hex[:12]}.parquet"
            written.append(write_new_file(partition_dir(self.root, product, first_us), name,
                                          table_of(rows)))
            del rows[:]
        self._rows.clear()
        self._count = 0
        self._since = self._clock()
        self.files_written += len(written)
        return written

    def health(self) -> tuple[bool, dict]:
        return True, {"labelled_parquet_files": self.files_written}
