"""The offline path: recordings -> feature table -> Parquet under data/processed.

Same engine as the service (:func:`cryptovol.core.features.features_frame`). Output:
``<out>/features/product=<product_id>/date=<YYYY-MM-DD>/features.parquet``
with the columns of ``features_frame`` (``segment_id`` included). A run
replaces the files of the partitions it writes (each written to a temporary
name and renamed into place) and removes stale ones of an earlier run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from cryptovol.core.features import FeatureConfig, features_frame
from cryptovol.core.ticks import Tick
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.recordings import open_recordings, read_ticks

log = get_logger(__name__)
FILE_NAME = "features.parquet"


def _progress(ticks: Iterable[Tick], total_files: int, show: bool) -> Iterator[Tick]:
    bar = tqdm(total=None, unit="tick", desc=f"featurizing {total_files} files", disable=not show)
    try:
        for tick in ticks:
            bar.update()
            yield tick
    finally:
        bar.close()


def write_offline(files: Iterable[Path | str], out: Path, config: FeatureConfig | None = None,
                  progress: bool = True) -> list[Path]:
    recordings = open_recordings(files)
    if not recordings:
        raise FileNotFoundError(f"no recordings (*.ndjson[.gz]) in {list(map(str, files))}")
    frame = features_frame(_progress(read_ticks(recordings), len(recordings), progress), config)
    root = out / "features"
    frame["date"] = frame["event_time"].dt.strftime("%Y-%m-%d")
    written: list[Path] = []
    groups = frame.groupby(["product_id", "date"], sort=True)
    for (product, day), part in tqdm(groups, desc="writing", unit="file", disable=not progress):
        folder = root / f"product={product}" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(part.drop(columns="date"), preserve_index=False)
        tmp = folder / f".{FILE_NAME}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, folder / FILE_NAME)
        written.append(folder / FILE_NAME)
    for stale in set(root.glob(f"product=*/date=*/{FILE_NAME}")) - set(written):
        stale.unlink()
    log.info("offline features written", extra={
        "rows": len(frame), "files": len(written), "out": str(root),
        "recordings": len(recordings)})
    return written


def read_offline(out: Path) -> pd.DataFrame:
    """The table written by :func:`write_offline`, in event-time order."""
    paths = sorted((out / "features").glob(f"product=*/date=*/{FILE_NAME}"))
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    return frame.sort_values(["product_id", "ts"], kind="stable", ignore_index=True)
