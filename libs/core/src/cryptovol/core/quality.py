"""How good scores are against labels (pure numpy, no I/O): one implementation
for training's reports, ``cryptovol-train evaluate`` and the live evaluator.

- :func:`average_precision` (PR-AUC): ``sum_n (R_n - R_{n-1}) P_n`` over the
  distinct scores, highest first, ties taken together (scikit-learn's
  ``average_precision_score``);
- :func:`roc_auc`: the probability that a random positive outranks a random
  negative, ties counting half (the trapezoidal ROC area);
- :func:`binary_metrics`: both, with the prevalence beside them, Brier score,
  calibration error, and precision / recall / F1 / flag rate at a threshold;
- :func:`calibration_bins`: mean score against the observed rate per score bin
  (the reliability diagram).

Ranking metrics are NaN when only one class is present.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("n", "positives", "prevalence", "pr_auc", "pr_auc_lift", "roc_auc", "precision",
                "recall", "f1", "flag_rate", "brier", "ece", "threshold")
CALIBRATION_BINS = 10


def _prepared(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels for {len(p)} scores")
    return y, p


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (step-wise, no
    interpolation)."""
    y, p = _prepared(y, p)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        return math.nan
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # last row of each distinct score
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    y, p = _prepared(y, p)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
    ends = np.r_[starts[1:], len(p)]
    mid = (starts + ends + 1) / 2.0  # mid-rank of each run of ties (ranks from 1)
    ranks = np.empty(len(p))
    ranks[order] = np.repeat(mid, ends - starts)
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _prepared(y, p)
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


def calibration_bins(
    y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width score bin: rows, mean score, observed positive rate (NaN
    where a bin is empty)."""
    y, p = _prepared(y, p)
    which = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(which, weights=p, minlength=bins) / count
        observed = np.bincount(which, weights=y, minlength=bins) / count
    return count, mean_score, observed


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Mean |observed rate - mean score| over equal-width score bins, weighted by rows."""
    y, p = _prepared(y, p)
    if len(y) == 0:
        return math.nan
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=y, minlength=bins)
                 - np.bincount(which, weights=p, minlength=bins))
    return float(gap.sum() / count.sum())


def binary_metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float, flags: np.ndarray | None = None
) -> dict[str, float]:
    """PR-AUC (average precision) with the prevalence beside it, ROC-AUC, Brier,
    and precision / recall / F1 of ``scores >= threshold`` (or of ``flags``, when
    rows were flagged with different thresholds, e.g. pooled over folds)."""
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
    pr_auc = average_precision(y, p) if both else math.nan
    return {
        "n": n,
        "positives": positives,
        "prevalence": prevalence,
        "pr_auc": pr_auc,
        "pr_auc_lift": pr_auc / prevalence if both else math.nan,
        "roc_auc": roc_auc(y, p) if both else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "flag_rate": float(flagged.mean()) if n else math.nan,
        "brier": brier(y, p),
        "ece": expected_calibration_error(y, p),
        "threshold": float(threshold),
    }
