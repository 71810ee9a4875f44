"""Append-only Parquet output of feature rows, batched.

Rows are buffered and written as new files under
``<root>/product=<product_id>/date=<YYYY-MM-DD>/part-<first event us>-<id>.parquet``
(hive-style folders; ``date`` is the UTC day of the event time). A file is
written to a temporary name and renamed into place, so readers never see a
partial file, and no file is ever opened again.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cryptovol.core.features import FEATURE_NAMES, StepResult
from cryptovol.core.ticks import Tick

#: Columns of the streaming files: the offline table's, without ``segment_id``
#: (a counter since the process started, so not stable across restarts).
SCHEMA = pa.schema(
    [("record_id", pa.string()), ("product_id", pa.string()),
     ("event_time", pa.timestamp("us", tz="UTC")), ("ts", pa.float64()),
     ("price", pa.float64()), ("warmup", pa.bool_())]
    + [(name, pa.float64()) for name in FEATURE_NAMES]
)
_DAY_US = 86_400_000_000


def partition_dir(root: Path, product_id: str, event_us: int) -> Path:
    day = datetime.fromtimestamp(event_us // _DAY_US * 86_400, UTC).strftime("%Y-%m-%d")
    return root / f"product={product_id}" / f"date={day}"


def write_new_file(folder: Path, name: str, table: pa.Table) -> Path:
    """Write ``table`` to ``folder/name`` atomically; refuse to replace a file."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    if final.exists():
        raise FileExistsError(final)
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, final)
    return final


class ParquetSink:
    """The featurizer's sink on the stream worker: rows of acknowledged batches
    are buffered and written when ``max_rows`` are buffered or the oldest has
    waited ``flush_s``; the worker commits their offsets only after that."""

    def __init__(self, root: Path, max_rows: int = 50_000, flush_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.max_rows = max_rows
        self.flush_s = flush_s
        self._clock = clock
        self._rows: dict[tuple[str, int], list[tuple[Tick, StepResult]]] = {}
        self._count = 0
        self._since = clock()
        self.files_written = 0

    def __len__(self) -> int:
        return self._count

    def add(self, rows: Sequence[tuple[Tick, StepResult]]) -> None:
        if not self._count:
            self._since = self._clock()
        for tick, res in rows:
            self._rows.setdefault((tick.product_id, res.time_us // _DAY_US), []).append(
                (tick, res))
        self._count += len(rows)

    def due(self) -> bool:
        return self._count >= self.max_rows or (
            self._count > 0 and self._clock() - self._since >= self.flush_s)

    def health(self) -> tuple[bool, dict]:
        return True, {"parquet_files": self.files_written}

    def flush(self) -> list[Path]:
        written = []
        for (product, _day), rows in sorted(self._rows.items()):
            first_us = rows[0][1].time_us
            name = f"part-{first_us}-{uuid.uuid4().hex[:12]}.parquet"
            written.append(write_new_file(partition_dir(self.root, product, first_us), name,
                                          rows_table(rows)))
        self._rows.clear()
        self._count = 0
        self._since = self._clock()
        self.files_written += len(written)
        return written


def rows_table(rows: Sequence[tuple[Tick, StepResult]]) -> pa.Table:
    """The rows as a table of :data:`SCHEMA`; the features go through one float
    matrix (built in C from the value tuples), a contiguous column each."""
    times = np.fromiter((res.time_us for _, res in rows), dtype=np.int64, count=len(rows))
    matrix = np.array([res.values for _, res in rows], dtype=np.float64).reshape(
        len(rows), len(FEATURE_NAMES))
    columns = [
        pa.array([t.record_id for t, _ in rows], pa.string()),
        pa.array([t.product_id for t, _ in rows], pa.string()),
        pa.array(times, pa.timestamp("us", tz="UTC")),
        pa.array(times / 1e6, pa.float64()),
        pa.array(np.fromiter((t.price for t, _ in rows), dtype=np.float64, count=len(rows))),
        pa.array(np.fromiter((res.warmup for _, res in rows), dtype=bool, count=len(rows))),
        *(pa.array(column) for column in np.ascontiguousarray(matrix.T)),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)
