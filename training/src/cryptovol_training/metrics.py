"""Classification metrics and threshold choice (pure)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
)

METRIC_NAMES = ("n", "positives", "prevalence", "pr_auc", "pr_auc_lift", "roc_auc", "precision",
                "recall", "f1", "flag_rate", "brier", "threshold")


def binary_metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float, flags: np.ndarray | None = None
) -> dict[str, float]:
    """PR-AUC (average precision) with the prevalence beside it, ROC-AUC, Brier,
    and precision / recall / F1 of ``scores >= threshold`` (or of ``flags``, when
    rows were flagged with different thresholds, e.g. pooled over folds).
    Ranking metrics are NaN when only one class is present."""
    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    n = len(y)
    positives = int(y.sum())
    both = 0 < positives < n
    flagged = p >= threshold if flags is None else np.asarray(flags, dtype=bool)
    tp = int(np.sum(flagged & (y == 1)))
    precision = tp / int(flagged.sum()) if flagged.any() else math.nan
    recall = tp / positives if positives else math.nan
    f1 = (2 * tp / (int(flagged.sum()) + positives)) if (flagged.any() or positives) else math.nan
    prevalence = positives / n if n else math.nan
    pr_auc = float(average_precision_score(y, p)) if both else math.nan
    return {
        "n": n,
        "positives": positives,
        "prevalence": prevalence,
        "pr_auc": pr_auc,
        "pr_auc_lift": pr_auc / prevalence if both else math.nan,
        "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "flag_rate": float(flagged.mean()) if n else math.nan,
        "brier": float(brier_score_loss(y, p)) if n else math.nan,
        "threshold": float(threshold),
    }


MAX_FLAG_RATE = 0.25


def choose_threshold(
    y: np.ndarray, scores: np.ndarray, default: float = 0.5, max_flag_rate: float = MAX_FLAG_RATE
) -> float:
    """The score threshold with the best F1 on (validation) data among those that
    flag at most ``max_flag_rate`` of the rows (an alarm on most rows is no alarm:
    when ranking is weak, plain best-F1 drifts to "flag everything"); among
    equal F1 the highest threshold. ``default`` if there are no positives."""
    y = np.asarray(y, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(y) == 0 or y.sum() == 0:
        return default
    precision, recall, thresholds = precision_recall_curve(y, scores)
    precision, recall = precision[:-1], recall[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    ordered = np.sort(scores)
    flag_rate = 1.0 - np.searchsorted(ordered, thresholds, side="left") / len(scores)
    allowed = flag_rate <= max_flag_rate
    if not allowed.any():
        return float(np.clip(thresholds.max(), 0.0, 1.0))
    f1 = np.where(allowed, f1, -1.0)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(np.clip(thresholds[best].max(), 0.0, 1.0))


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Only the finite numbers (what MLflow accepts)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)}
