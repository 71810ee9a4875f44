"""Evaluate stored artifacts (and the persistence baseline) on any recordings.

Each artifact scores the rows exactly as the API would: its own feature
order, its stored imputation values for missing features, its stored
threshold. The label is the one the artifacts were trained with (from their
metadata) unless one is given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryptovol.core.labels import LabelConfig
from cryptovol.runtime.artifacts import METADATA_FILE, Artifact, ArtifactError, load_artifact
from cryptovol_training.dataset import build_dataset, matrix
from cryptovol_training.metrics import binary_metrics
from cryptovol_training.models import PERSISTENCE, PERSISTENCE_THRESHOLD, persistence_probability
from cryptovol_training.train import _clean

log = logging.getLogger(__name__)


def find_artifacts(models_dir: Path) -> list[Path]:
    """Artifact folders: ``models_dir`` itself if it is one, else its sub-folders."""
    if (models_dir / METADATA_FILE).is_file():
        return [models_dir]
    return sorted(p for p in models_dir.iterdir() if (p / METADATA_FILE).is_file())


def _label_config(artifacts: Sequence[Artifact]) -> LabelConfig:
    for art in artifacts:
        if art.metadata.label:
            fields = LabelConfig.__dataclass_fields__
            return LabelConfig(**{k: v for k, v in art.metadata.label.items() if k in fields})
    return LabelConfig()


def evaluate(
    data: Sequence[Path | str],
    models_dir: Path,
    label: LabelConfig | None = None,
    include_warmup: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    folders = find_artifacts(models_dir)
    if not folders:
        raise ArtifactError(f"no artifacts (folders with {METADATA_FILE}) under {models_dir}")
    artifacts: list[Artifact] = []
    errors: dict[str, str] = {}
    for folder in folders:
        try:
            artifacts.append(load_artifact(folder))
        except ArtifactError as exc:
            errors[folder.name] = str(exc)
    cfg = label or _label_config(artifacts)
    ds = build_dataset(data, cfg, progress=progress)  # train-row labels unused here
    frame = ds.frame
    usable = frame["has_label"] if include_warmup else frame["has_label"] & ~frame["warmup"]
    rows = frame.loc[usable].sort_values("ts", kind="stable").reset_index(drop=True)
    y = rows["spike"].to_numpy(dtype=np.int64)

    results: dict[str, Any] = {}
    for art in artifacts:
        meta = art.metadata
        X = matrix(rows, meta.features)
        fill = np.array([meta.imputation.get(f, 0.0) for f in meta.features])
        X = np.where(np.isfinite(X), X, fill)
        scores = art.score(X) if len(X) else np.empty(0)
        results[meta.name] = {
            "version": meta.version, "variant": meta.variant, "model_type": meta.model_type,
            "sha256": meta.sha256, **binary_metrics(y, scores, meta.threshold),
        }
    pers = persistence_probability(rows["persistence"].to_numpy())
    results[PERSISTENCE] = {"version": "rule", "variant": "reference",
                            "model_type": "RV_60 / tau",
                            **binary_metrics(y, pers, PERSISTENCE_THRESHOLD)}
    return _clean({
        "data": [str(p) for p in ds.files],
        "fingerprint": ds.fingerprint,
        "label": cfg.to_dict(),
        "include_warmup": include_warmup,
        "ticks": len(frame),
        "rows": len(rows),
        "prevalence": float(y.mean()) if len(y) else None,
        "models": results,
        "errors": errors,
    })
