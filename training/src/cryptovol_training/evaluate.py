"""Evaluate stored artifacts (and the persistence baseline) on any recordings.

Each artifact scores the rows exactly as the API would: through its own
scoring contract (``cryptovol.core.scoring``: feature order, stored imputation
values, stored threshold), the code the API runs. The rows are those of
``Dataset.evaluation_rows`` (the label as defined, past warm-up), the label
the one the artifacts were trained with (from their metadata) unless one is
given. Besides the pooled numbers, every model is scored block by block
(equal row counts in time order) and compared with persistence.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryptovol.core.labels import LabelConfig
from cryptovol.runtime.artifacts import METADATA_FILE, Artifact, ArtifactError, load_artifact
from cryptovol_training.dataset import build_dataset, matrix
from cryptovol_training.metrics import binary_metrics, clean, lifts
from cryptovol_training.models import PERSISTENCE, PERSISTENCE_THRESHOLD, persistence_probability
from cryptovol_training.splits import block_edges
from cryptovol_training.walkforward import block_comparison

log = logging.getLogger(__name__)

DEFAULT_BLOCKS = 3


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


def artifact_scores(art: Artifact, rows: Any) -> np.ndarray:
    """``art``'s scores of feature-table rows, prepared by its scoring contract."""
    X = art.contract.impute(matrix(rows, art.contract.features))
    return art.score(X) if len(X) else np.empty(0)


def evaluate(
    data: Sequence[Path | str],
    models_dir: Path,
    label: LabelConfig | None = None,
    include_warmup: bool = False,
    progress: bool = True,
    blocks: int = DEFAULT_BLOCKS,
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
    ds = build_dataset(data, cfg, progress=progress)  # nothing locked away: all rows count
    rows = ds.evaluation_rows(include_warmup)
    y = rows["spike"].to_numpy(dtype=np.int64)
    edges = block_edges(rows["ts"].to_numpy(), blocks) if len(rows) else [0, 0]
    spans = [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]

    def scored(scores: np.ndarray, threshold: float) -> dict[str, Any]:
        return {**binary_metrics(y, scores, threshold),
                "blocks": [binary_metrics(y[lo:hi], scores[lo:hi], threshold)
                           for lo, hi in spans]}

    pers = scored(persistence_probability(rows["persistence"].to_numpy()),
                  PERSISTENCE_THRESHOLD)
    results: dict[str, Any] = {}
    for art in artifacts:
        meta = art.metadata
        result = scored(artifact_scores(art, rows), meta.threshold)
        results[meta.name] = {
            "version": meta.version, "variant": meta.variant, "model_type": meta.model_type,
            "sha256": meta.sha256, **result,
            "vs_persistence": lifts(result, pers),
            "per_block": block_comparison(result["blocks"], pers["blocks"]),
        }
    results[PERSISTENCE] = {"version": "rule", "variant": "reference",
                            "model_type": "RV_60 / tau", **pers}
    return clean({
        "data": [str(p) for p in ds.files],
        "fingerprint": ds.fingerprint,
        "label": cfg.to_dict(),
        "include_warmup": include_warmup,
        "ticks": len(ds.frame),
        "rows": len(rows),
        "prevalence": float(y.mean()) if len(y) else None,
        "blocks": [{"start": float(rows["ts"].iloc[lo]), "end": float(rows["ts"].iloc[hi - 1]),
                    "rows": hi - lo} for lo, hi in spans],
        "models": results,
        "errors": errors,
    })
