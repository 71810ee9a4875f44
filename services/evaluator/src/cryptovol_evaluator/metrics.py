"""The evaluator's Prometheus metrics (names and labels: docs/metrics.md).

Quality gauges carry ``role`` (served, shadow, reference), ``model_variant``,
``model_version`` and ``window`` (15m, 1h: event time, see quality.py); a
series disappears when its scorer has no row left in the window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from cryptovol.core.quality import CALIBRATION_BINS
from cryptovol_evaluator.quality import Quality

_SCORER = ["role", "model_variant", "model_version", "window"]

#: quality gauge -> (help, key of cryptovol.core.quality.binary_metrics)
QUALITY = {
    "pr_auc": ("PR-AUC (average precision) of the labelled rows", "pr_auc"),
    "roc_auc": ("ROC-AUC of the labelled rows", "roc_auc"),
    "precision": ("precision of the flags at the scorer's threshold", "precision"),
    "recall": ("recall of the flags at the scorer's threshold", "recall"),
    "f1": ("F1 of the flags at the scorer's threshold", "f1"),
    "brier": ("Brier score (mean squared error of the score)", "brier"),
    "calibration_error": ("expected calibration error over 10 score bins", "ece"),
    "spike_rate": ("realized spike rate of the labelled rows (the prevalence)", "prevalence"),
    "flag_rate": ("share of labelled rows flagged", "flag_rate"),
    "threshold": ("the scorer's decision threshold", "threshold"),
}
GAUGES = {name: Gauge(f"cryptovol_evaluator_{name}", text, _SCORER)
          for name, (text, _key) in QUALITY.items()}
COVERAGE = Gauge("cryptovol_evaluator_label_coverage",
                 "share of graded predictions that got a label", _SCORER)
ROWS = Gauge("cryptovol_evaluator_window_rows", "graded predictions in the window", _SCORER)
LABELLED = Gauge("cryptovol_evaluator_window_labelled_rows", "labelled rows in the window",
                 _SCORER)
CAL_SCORE = Gauge("cryptovol_evaluator_calibration_mean_score",
                  "mean score of the labelled rows in a score bin", [*_SCORER, "bin"])
CAL_OBSERVED = Gauge("cryptovol_evaluator_calibration_observed_rate",
                     "realized spike rate of the labelled rows in a score bin", [*_SCORER, "bin"])

PREDICTIONS = Counter(
    "cryptovol_evaluator_predictions_total",
    "predictions read: labelled, or graded without a label (cut, no_history, no_past, "
    "no_tick), or dropped as duplicate", ["outcome"])
TICKS = Counter("cryptovol_evaluator_ticks_total",
                "ticks read, by the features engine's acceptance outcome", ["outcome"])
DEAD_LETTERED = Counter("cryptovol_evaluator_dead_lettered_total",
                        "malformed records dead-lettered", ["topic"])
LABELS_LET_GO = Counter("cryptovol_evaluator_labels_unmatched_total",
                        "labels whose prediction never came (e.g. warm-up rows)")
PENDING = Gauge("cryptovol_evaluator_pending_predictions", "predictions waiting for a label")
WAITING = Gauge("cryptovol_evaluator_waiting_labels", "labels waiting for their prediction")
LAST_GRADED = Gauge("cryptovol_evaluator_last_graded_event_timestamp_seconds",
                    "event time of the newest graded prediction")
LAST_GRADED_AT = Gauge("cryptovol_evaluator_last_graded_timestamp_seconds",
                       "Unix time at which a prediction was last graded")
DELAY = Histogram("cryptovol_evaluator_grading_delay_seconds",
                  "row event time to graded (the label horizon plus the pipeline's lag)",
                  buckets=(30, 60, 65, 70, 80, 90, 120, 180, 300, 600, 1800, 3600))
LAG = Gauge("cryptovol_evaluator_lag", "records behind the end of an input topic",
            ["topic", "partition"])
STATE_REBUILD = Histogram("cryptovol_evaluator_state_rebuild_seconds",
                          "time to rebuild a partition's state after an assignment",
                          ["topic"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))

for _outcome in ("labelled", "cut", "no_history", "no_past", "no_tick", "duplicate"):
    PREDICTIONS.labels(_outcome)

_published: set[tuple[str, ...]] = set()


def publish(qualities: Sequence[Quality]) -> None:
    """Set every quality gauge; remove the series of scorers no longer in a window."""
    global _published
    seen: set[tuple[str, ...]] = set()
    for q in qualities:
        labels = (*q.scorer, q.window)
        seen.add(labels)
        for name, (_text, key) in QUALITY.items():
            GAUGES[name].labels(*labels).set(q.metrics[key])
        if q.scorer.role != "reference":  # persistence exists on labelled rows only
            COVERAGE.labels(*labels).set(q.coverage)
        ROWS.labels(*labels).set(q.rows)
        LABELLED.labels(*labels).set(q.labelled)
        count, mean_score, observed = q.calibration
        for b in range(len(count)):
            CAL_SCORE.labels(*labels, str(b)).set(mean_score[b])
            CAL_OBSERVED.labels(*labels, str(b)).set(observed[b])
    for labels in _published - seen:
        for gauge in (*GAUGES.values(), COVERAGE, ROWS, LABELLED):
            _remove(gauge, labels)
        for b in range(CALIBRATION_BINS):
            for gauge in (CAL_SCORE, CAL_OBSERVED):
                _remove(gauge, (*labels, str(b)))
    _published = seen


def _remove(gauge: Gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never set (coverage of the reference)
        gauge.remove(*labels)
