"""The training table: recordings -> feature library -> labels.

Features come from :func:`cryptovol.features.features_frame`, the very engine
the streaming featurizer runs, so training and serving cannot disagree. Labels
come from :mod:`cryptovol.labels`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cryptovol.features import FEATURE_NAMES, features_frame
from cryptovol.labels import LabelConfig, compute_labels
from cryptovol.recordings import Recording, open_recordings, read_ticks

FEATURES: tuple[str, ...] = tuple(FEATURE_NAMES)


@dataclass
class Dataset:
    """Every featurised tick with its labels (``frame``), and the rows a model
    learns from and is scored on (``rows``: labelled, past warm-up, time-sorted)."""

    frame: pd.DataFrame
    label_config: LabelConfig
    files: list[str]
    fingerprint: str

    @property
    def rows(self) -> pd.DataFrame:
        usable = self.frame["has_label"] & ~self.frame["warmup"]
        return self.frame.loc[usable].sort_values("ts", kind="stable").reset_index(drop=True)

    def summary(self) -> dict[str, object]:
        rows = self.rows
        return {
            "files": len(self.files),
            "ticks": len(self.frame),
            "labelled": int(self.frame["has_label"].sum()),
            "rows": len(rows),
            "prevalence": float(rows["spike"].mean()) if len(rows) else float("nan"),
            "start": _iso(rows["ts"].min()) if len(rows) else None,
            "end": _iso(rows["ts"].max()) if len(rows) else None,
            "fingerprint": self.fingerprint,
        }


def _iso(ts: float) -> str:
    return pd.Timestamp(ts, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(recordings: Sequence[Recording], label_config: LabelConfig) -> str:
    """Content hash of the input files (name, zone, bytes) and the label config."""
    digest = hashlib.sha256()
    for rec in recordings:
        digest.update(f"{rec.path.name}|{rec.timezone}|{file_digest(rec.path)}\n".encode())
    digest.update(json.dumps(label_config.to_dict(), sort_keys=True).encode())
    return "sha256:" + digest.hexdigest()


def _ticks(recordings: Sequence[Recording], progress: bool) -> Iterable:
    for rec in tqdm(recordings, desc="features", unit="file", disable=not progress):
        yield from read_ticks([rec])


def build_dataset(
    paths: Iterable[Path | str], label_config: LabelConfig | None = None, progress: bool = True
) -> Dataset:
    cfg = label_config or LabelConfig()
    recordings = open_recordings(paths)
    if not recordings:
        raise FileNotFoundError("no recordings found (expected *.ndjson or *.ndjson.gz files)")
    frame = features_frame(_ticks(recordings, progress))
    labels = compute_labels(frame, cfg)
    frame = pd.concat([frame, labels], axis=1)
    return Dataset(frame=frame, label_config=cfg, files=[str(r.path) for r in recordings],
                   fingerprint=fingerprint(recordings, cfg))


def matrix(rows: pd.DataFrame, features: Sequence[str] = FEATURES) -> np.ndarray:
    return rows.loc[:, list(features)].to_numpy(dtype=np.float64)
