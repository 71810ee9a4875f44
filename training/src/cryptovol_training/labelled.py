"""Offline analysis of graded predictions: what the live evaluator wrote
(``predictions.labelled`` as Parquet under ``DATA_DIR/processed/labelled``, or
the topic dumped as NDJSON), scored per scorer with the metrics training and the
evaluator report (``cryptovol.core.quality``).

    cryptovol-train evaluate --labelled data/processed/labelled --out live.json

Rows are de-duplicated by ``record_id`` (the evaluator may write a row again
after a crash); each scorer is scored on the labelled rows it scored.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.dataset as pads

from cryptovol.core.quality import binary_metrics
from cryptovol_training.metrics import clean


def _files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    parquet, ndjson = [], []
    for path in paths:
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in found:
            if f.name.startswith("."):
                continue
            if f.suffix == ".parquet":
                parquet.append(f)
            elif f.name.endswith((".ndjson", ".ndjson.gz", ".jsonl")):
                ndjson.append(f)
    return parquet, ndjson


def read_labelled(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The graded predictions under ``paths``, one per record id, in event order."""
    parquet, ndjson = _files(paths)
    rows: dict[str, dict[str, Any]] = {}
    if parquet:
        table = pads.dataset([str(p) for p in parquet], format="parquet").to_table()
        for row in table.to_pylist():
            rows.setdefault(row["record_id"], row)
    for path in ndjson:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    row = orjson.loads(line)
                    rows.setdefault(row["record_id"], row)
    return sorted(rows.values(), key=lambda r: str(r["event_time"]))


def evaluate_labelled(paths: Sequence[Path]) -> dict[str, Any]:
    rows = read_labelled(paths)
    if not rows:
        raise FileNotFoundError(f"no labelled predictions under {[str(p) for p in paths]}")
    columns: dict[tuple[str, str, str], dict[str, list]] = {}
    for row in rows:
        for s in row["scores"]:
            col = columns.setdefault((s["role"], s["model_variant"], s["model_version"]),
                                     {"y": [], "score": [], "flag": [], "threshold": [], "n": []})
            col["n"].append(1)
            if row["has_label"]:
                col["y"].append(int(bool(row["spike"])))
                col["score"].append(s["score"])
                col["flag"].append(bool(s["flagged"]))
                col["threshold"].append(s["threshold"])
    scorers = []
    for (role, variant, version), col in sorted(columns.items()):
        y = np.asarray(col["y"], dtype=np.int64)
        threshold = col["threshold"][-1] if col["threshold"] else float("nan")
        metrics = binary_metrics(y, np.asarray(col["score"]), threshold,
                                 np.asarray(col["flag"], dtype=bool))
        scorers.append({"role": role, "model_variant": variant, "model_version": version,
                        "graded": len(col["n"]), "labelled": len(y),
                        "label_coverage": len(y) / len(col["n"]) if role != "reference"
                        else None, **metrics})
    labelled = [r for r in rows if r["has_label"]]
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["reason"] or "labelled"] = reasons.get(r["reason"] or "labelled", 0) + 1
    return clean({
        "data": [str(p) for p in paths], "graded": len(rows), "labelled": len(labelled),
        "outcomes": reasons,
        "prevalence": float(np.mean([bool(r["spike"]) for r in labelled])) if labelled else None,
        "start": str(rows[0]["event_time"]), "end": str(rows[-1]["event_time"]),
        "scorers": scorers,
    })
