"""Threshold choice and reporting helpers (pure); the metrics are
:mod:`cryptovol.core.quality`, the code the live evaluator runs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

# The metrics themselves are the core's, shared with the live evaluator
from cryptovol.core.quality import (  # noqa: F401  (re-exported for training's callers)
    CALIBRATION_BINS,
    METRIC_NAMES,
    binary_metrics,
    expected_calibration_error,
)

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


def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Only the finite numbers (what MLflow accepts)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(v)}


# --- against persistence: the bars a served model must clear ---------------------------

TARGET_LIFT_PREVALENCE = 2.0
TARGET_LIFT_PERSISTENCE = 1.15


def clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite(value: Any) -> float:
    """A number, or NaN for None and non-numbers."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan


def lifts(metrics: dict[str, Any], persistence: dict[str, Any]) -> dict[str, Any]:
    """A model's numbers against persistence's and the prevalence, with the bars met."""
    pr_auc, pers = finite(metrics.get("pr_auc")), finite(persistence.get("pr_auc"))
    prevalence = finite(metrics.get("prevalence"))
    vs_prev = pr_auc / prevalence if prevalence else math.nan
    vs_pers = pr_auc / pers if pers else math.nan
    rate = finite(metrics.get("flag_rate")) / prevalence if prevalence else math.nan
    checks = {
        "pr_auc_vs_persistence": bool(vs_pers >= TARGET_LIFT_PERSISTENCE),
        "pr_auc_vs_prevalence": bool(vs_prev >= TARGET_LIFT_PREVALENCE),
        "f1_vs_persistence": bool(finite(metrics.get("f1")) >= finite(persistence.get("f1"))),
        "flag_rate_within_half_to_twice_spike_rate": bool(0.5 <= rate <= 2.0),
        "brier_below_persistence": bool(finite(metrics.get("brier"))
                                        < finite(persistence.get("brier"))),
    }
    return {
        "pr_auc": pr_auc, "prevalence": prevalence, "persistence_pr_auc": pers,
        "lift_over_prevalence": vs_prev, "lift_over_persistence": vs_pers,
        "flag_rate_over_prevalence": rate,
        "target_lift_over_prevalence": TARGET_LIFT_PREVALENCE,
        "target_lift_over_persistence": TARGET_LIFT_PERSISTENCE,
        "checks": checks, "all_met": all(checks.values()),
        "beats_persistence": bool(vs_pers > 1.0),
    }


