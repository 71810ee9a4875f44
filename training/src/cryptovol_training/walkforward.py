"""Walk-forward evaluation of every candidate and both baselines.

Per fold: medians for imputation and every model are fitted on the fitting
slice (training rows) only; each model's decision threshold is the best-F1 threshold on the
validation slice; the test block is scored once. Nothing of a test block is
used for any choice. "Overall" pools the out-of-time scores of all folds (each
flagged with its own fold's threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from cryptovol_training.dataset import FEATURES, matrix
from cryptovol_training.metrics import binary_metrics, choose_threshold
from cryptovol_training.models import (
    MODEL_SPECS,
    PERSISTENCE,
    PERSISTENCE_THRESHOLD,
    ZSCORE,
    feature_importance,
    fit_model,
    fit_zscore,
    imputation_values,
    impute,
    persistence_probability,
)
from cryptovol_training.splits import Fold

REGIMES = ("calm", "normal", "volatile")


@dataclass
class ModelEvaluation:
    name: str
    folds: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    overall: dict[str, float] = field(default_factory=dict)
    validation_overall: dict[str, float] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)


@dataclass
class WalkForwardResult:
    models: dict[str, ModelEvaluation]
    predictions: pd.DataFrame  # out-of-time: fold, ts, y, regime, <model> score, <model>_flag
    folds: list[dict[str, float]]

    def table(self) -> pd.DataFrame:
        """One row per (model, fold) plus an ``overall`` row per model."""
        records = []
        for name, ev in self.models.items():
            for m in ev.folds:
                records.append({"model": name, **m})
            records.append({"model": name, "fold": "overall", **ev.overall})
        return pd.DataFrame.from_records(records)


def regimes(tau: np.ndarray) -> np.ndarray:
    """Calm / normal / volatile by terciles of the label threshold tau."""
    finite = tau[np.isfinite(tau)]
    if len(finite) == 0:
        return np.full(len(tau), "normal", dtype=object)
    lo, hi = np.quantile(finite, [1 / 3, 2 / 3])
    return np.where(tau <= lo, REGIMES[0], np.where(tau <= hi, REGIMES[1], REGIMES[2]))


def _pooled(y: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    out = binary_metrics(y, scores, threshold=float("nan"), flags=flags)
    out.pop("threshold")
    return out


def run_walk_forward(
    eval_rows: pd.DataFrame,
    train_rows: pd.DataFrame,
    folds: Sequence[Fold],
    model_names: Sequence[str],
    seed: int = 0,
    progress: bool = True,
) -> WalkForwardResult:
    X_train_raw = matrix(train_rows, FEATURES)
    y_train = train_rows["train_spike"].to_numpy(dtype=np.int64)
    X_eval_raw = matrix(eval_rows, FEATURES)
    y = eval_rows["spike"].to_numpy(dtype=np.int64)
    persistence = persistence_probability(eval_rows["persistence"].to_numpy())
    names = [*model_names, ZSCORE, PERSISTENCE]
    evaluations = {name: ModelEvaluation(name) for name in names}
    pieces: list[pd.DataFrame] = []
    importances: dict[str, list[dict[str, float]]] = {name: [] for name in model_names}
    valid_scores: dict[str, list[np.ndarray]] = {name: [] for name in names}
    valid_y: list[np.ndarray] = []
    column = {f: j for j, f in enumerate(FEATURES)}

    steps = tqdm(total=len(folds) * len(names), desc="walk-forward", unit="fit",
                 disable=not progress)
    for fold in folds:
        fill = imputation_values(X_train_raw[fold.fit], FEATURES)
        X_train = impute(X_train_raw, FEATURES, fill)
        X_eval = impute(X_eval_raw, FEATURES, fill)
        piece = pd.DataFrame({"fold": fold.index, "ts": eval_rows["ts"].to_numpy()[fold.test],
                              "y": y[fold.test]})
        valid_y.append(y[fold.valid])
        for name in names:
            if name == PERSISTENCE:
                valid_p, test_p = persistence[fold.valid], persistence[fold.test]
                threshold = PERSISTENCE_THRESHOLD
            elif name == ZSCORE:
                rule = fit_zscore(X_train_raw[fold.fit], FEATURES)
                valid_p = rule.score(X_eval[fold.valid], FEATURES)
                test_p = rule.score(X_eval[fold.test], FEATURES)
                threshold = choose_threshold(y[fold.valid], valid_p)
            else:
                cols = [column[f] for f in MODEL_SPECS[name].features]
                model = fit_model(name, X_train[np.ix_(fold.fit, cols)], y_train[fold.fit], seed)
                valid_p = model.predict_proba(X_eval[np.ix_(fold.valid, cols)])[:, 1]
                test_p = model.predict_proba(X_eval[np.ix_(fold.test, cols)])[:, 1]
                threshold = choose_threshold(y[fold.valid], valid_p)
                importances[name].append(feature_importance(model, MODEL_SPECS[name].features))
            ev = evaluations[name]
            ev.validation.append({"fold": fold.index,
                                  **binary_metrics(y[fold.valid], valid_p, threshold)})
            ev.folds.append({"fold": fold.index, **binary_metrics(y[fold.test], test_p, threshold)})
            valid_scores[name].append(valid_p)
            piece[name] = test_p
            piece[f"{name}_flag"] = test_p >= threshold
            steps.update()
        pieces.append(piece)
    steps.close()

    predictions = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
    if len(predictions):
        test_rows = np.concatenate([f.test for f in folds])
        predictions["regime"] = regimes(eval_rows["tau"].to_numpy())[test_rows]
    all_valid_y = np.concatenate(valid_y) if valid_y else np.empty(0)
    for name, ev in evaluations.items():
        if len(predictions):
            ev.overall = _pooled(predictions["y"].to_numpy(), predictions[name].to_numpy(),
                                 predictions[f"{name}_flag"].to_numpy())
            scores = np.concatenate(valid_scores[name])
            thresholds = np.repeat([v["threshold"] for v in ev.validation],
                                   [len(v) for v in valid_scores[name]])
            ev.validation_overall = _pooled(all_valid_y, scores, scores >= thresholds)
        if importances.get(name):
            used = MODEL_SPECS[name].features
            ev.importance = {f: float(np.mean([imp.get(f, 0.0) for imp in importances[name]]))
                             for f in used}
    ts_eval, ts_train = eval_rows["ts"].to_numpy(), train_rows["ts"].to_numpy()
    described = [f.describe(ts_eval, ts_train) for f in folds]
    return WalkForwardResult(models=evaluations, predictions=predictions, folds=described)
