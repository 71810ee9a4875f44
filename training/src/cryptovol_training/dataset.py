"""The training table: recordings -> feature library -> labels.

Features come from :func:`cryptovol.core.features.features_frame`, the very engine
the streaming featurizer runs, so training and serving cannot disagree. Labels
come from :mod:`cryptovol.core.labels`.

Two row sets:

- evaluation rows (``eval_rows``): the label exactly as configured (tau on a
  full lookback of history) on rows past warm-up: the rows the consumer sends
  to the API. Every reported metric and every threshold uses only these.
- training rows (``train_rows``): every row with a causal label, warm-up rows
  included and tau resting on at least ``train_history_s`` of history. Same
  label where both exist (tau at a row does not depend on how much history is
  demanded); the extra rows come mostly from the short recordings of other
  days, which a 30-minute history requirement leaves unlabelled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cryptovol.core.features import FEATURE_NAMES, features_frame
from cryptovol.core.labels import LabelConfig, compute_labels
from cryptovol.runtime.recordings import Recording, open_recordings, read_ticks

FEATURES: tuple[str, ...] = tuple(FEATURE_NAMES)


@dataclass(frozen=True)
class RowPolicy:
    """Which rows models learn from (evaluation rows are fixed by the label)."""

    train_history_s: float = 300.0
    train_min_samples: int = 100
    train_on_warmup: bool = True

    def train_label(self, label: LabelConfig) -> LabelConfig:
        return replace(label, min_history_s=min(self.train_history_s, label.history_s),
                       min_samples=min(self.train_min_samples, label.min_samples))


@dataclass
class Dataset:
    """Every featurised tick with its labels (``frame``: ``spike``/``has_label`` for
    evaluation, ``train_spike``/``train_has_label`` for fitting)."""

    frame: pd.DataFrame
    label_config: LabelConfig
    policy: RowPolicy
    files: list[str]
    fingerprint: str

    def _select(self, mask: pd.Series) -> pd.DataFrame:
        return self.frame.loc[mask].sort_values("ts", kind="stable").reset_index(drop=True)

    @property
    def eval_rows(self) -> pd.DataFrame:
        return self._select(self.frame["has_label"] & ~self.frame["warmup"])

    @property
    def train_rows(self) -> pd.DataFrame:
        mask = self.frame["train_has_label"]
        if not self.policy.train_on_warmup:
            mask = mask & ~self.frame["warmup"]
        return self._select(mask)

    def summary(self) -> dict[str, object]:
        rows, train = self.eval_rows, self.train_rows
        return {
            "files": len(self.files),
            "ticks": len(self.frame),
            "rows": len(rows),
            "prevalence": float(rows["spike"].mean()) if len(rows) else float("nan"),
            "start": _iso(rows["ts"].min()) if len(rows) else None,
            "end": _iso(rows["ts"].max()) if len(rows) else None,
            "train_rows": len(train),
            "train_prevalence": float(train["train_spike"].mean()) if len(train) else float("nan"),
            "train_days": sorted({_iso(t)[:10] for t in train["ts"]}) if len(train) else [],
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
    paths: Iterable[Path | str],
    label_config: LabelConfig | None = None,
    progress: bool = True,
    policy: RowPolicy | None = None,
) -> Dataset:
    cfg = label_config or LabelConfig()
    policy = policy or RowPolicy()
    recordings = open_recordings(paths)
    if not recordings:
        raise FileNotFoundError("no recordings found (expected *.ndjson or *.ndjson.gz files)")
    frame = features_frame(_ticks(recordings, progress))
    labels = compute_labels(frame, cfg)
    train = compute_labels(frame, policy.train_label(cfg))
    frame = pd.concat([frame, labels], axis=1)
    frame["train_has_label"] = train["has_label"].to_numpy() | frame["has_label"].to_numpy()
    frame["train_spike"] = train["spike"].to_numpy()
    return Dataset(frame=frame, label_config=cfg, policy=policy,
                   files=[str(r.path) for r in recordings],
                   fingerprint=fingerprint(recordings, cfg))


def matrix(rows: pd.DataFrame, features: Sequence[str] = FEATURES) -> np.ndarray:
    return rows.loc[:, list(features)].to_numpy(dtype=np.float64)
