"""Append-only Parquet files in hive-style folders (the featurizer's rows, the
evaluator's labelled predictions): ``<root>/product=<id>/date=<YYYY-MM-DD>/``,
each file written under a temporary name and renamed into place, so readers
never see a partial file and no file is ever opened again."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DAY_US = 86_400_000_000


def partition_dir(root: Path, product_id: str, event_us: int) -> Path:
    day = datetime.fromtimestamp(event_us // DAY_US * 86_400, UTC).strftime("%Y-%m-%d")
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
