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

Both row sets hold the *development* rows only: the most recent recorded
time is locked away as the final test (``splits.final_test_start``, decided
from tick times before anything else), and every row whose label window
reaches into it (plus an embargo) is purged. ``final_test_rows()`` is the one
way to its rows, called once by the final step of training (or by
``cryptovol-train evaluate``, which has no development rows to protect).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cryptovol.core.features import FEATURE_NAMES, features_frame
from cryptovol.core.labels import LabelConfig, compute_labels
from cryptovol.runtime.recordings import Recording, open_recordings, read_ticks
from cryptovol_training.splits import FinalTestConfig, final_test_start

log = logging.getLogger(__name__)

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
    final_start: float | None = None  # epoch seconds; None: no final test locked away
    embargo_s: float = 60.0

    def _select(self, mask: pd.Series) -> pd.DataFrame:
        return self.frame.loc[mask].sort_values("ts", kind="stable").reset_index(drop=True)

    def _development(self) -> pd.Series:
        if self.final_start is None:
            return pd.Series(True, index=self.frame.index)
        end = self.frame["ts"] + self.label_config.horizon_s
        return end <= self.final_start - self.embargo_s

    @property
    def _evaluable(self) -> pd.Series:
        return self.frame["has_label"] & ~self.frame["warmup"]

    @property
    def eval_rows(self) -> pd.DataFrame:
        """Development rows with the label as defined, past warm-up."""
        return self.evaluation_rows()

    def evaluation_rows(self, include_warmup: bool = False) -> pd.DataFrame:
        """Development rows with the label as defined (past warm-up unless asked)."""
        usable = self.frame["has_label"] if include_warmup else self._evaluable
        return self._select(usable & self._development())

    @property
    def train_rows(self) -> pd.DataFrame:
        """Development rows models may learn from."""
        mask = self.frame["train_has_label"] & self._development()
        if not self.policy.train_on_warmup:
            mask = mask & ~self.frame["warmup"]
        return self._select(mask)

    def final_test_rows(self, labelled: str = "evaluation") -> pd.DataFrame:
        """The locked final test, for the final step only: its ``evaluation`` rows
        (label as defined, past warm-up: what ``evaluate`` and the live service
        see) or every ``training``-label row (tau on a shorter history, warm-up
        rows too: the rows a short recording still labels), with the label in
        ``spike`` either way."""
        if self.final_start is None:
            return self._select(pd.Series(False, index=self.frame.index))
        log.warning("opening the locked final test",
                    extra={"final_start": _iso(self.final_start), "rows": labelled})
        after = self.frame["ts"] >= self.final_start
        if labelled == "evaluation":
            return self._select(self._evaluable & after)
        if labelled != "training":
            raise ValueError(f"labelled must be 'evaluation' or 'training', not {labelled!r}")
        rows = self._select(self.frame["train_has_label"] & after)
        return rows.assign(spike=rows["train_spike"], persistence=rows["train_persistence"])

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
            "final_test_start": _iso(self.final_start) if self.final_start is not None else None,
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
    final: FinalTestConfig | None = None,
    embargo_s: float = 60.0,
) -> Dataset:
    """Features and labels of the recordings under ``paths``; ``final`` locks away
    the most recent recorded time (default: none, every row is development)."""
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
    frame["train_persistence"] = train["persistence"].to_numpy()
    segments = frame["product_id"].astype(str) + ":" + frame["segment_id"].astype(str)
    start = final_test_start(frame["ts"].to_numpy(), segments.to_numpy(),
                             final.fraction if final else 0.0)
    return Dataset(frame=frame, label_config=cfg, policy=policy,
                   files=[str(r.path) for r in recordings],
                   fingerprint=fingerprint(recordings, cfg), final_start=start,
                   embargo_s=embargo_s)


def matrix(rows: pd.DataFrame, features: Sequence[str] = FEATURES) -> np.ndarray:
    """The raw columns (NaN where undefined); a ``ScoringContract`` imputes them."""
    return rows.loc[:, list(features)].to_numpy(dtype=np.float64)
