"""Walk-forward evaluation of every candidate and the baselines (development rows only).

Per fold: each candidate is fitted by :func:`~cryptovol_training.candidates.fit_candidate`
on the fold's fitting rows (imputation medians, model and decision threshold
all from those rows), and the test block is scored once. Nothing of a test
block is used for any choice, and the locked final test is not here at all.
"Overall" pools the out-of-time scores of all folds (each flagged with its
own fold's threshold); ``per_block`` says how often a model beat persistence
block by block, so one lucky block cannot carry the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from cryptovol_training.candidates import fit_candidate
from cryptovol_training.metrics import binary_metrics
from cryptovol_training.models import (
    MODEL_SPECS,
    PERSISTENCE,
    PERSISTENCE_THRESHOLD,
    ZSCORE,
    feature_importance,
    persistence_probability,
)
from cryptovol_training.splits import Fold

REGIMES = ("calm", "normal", "volatile")


@dataclass
class ModelEvaluation:
    name: str
    folds: list[dict[str, float]] = field(default_factory=list)
    overall: dict[str, float] = field(default_factory=dict)
    per_block: dict[str, Any] = field(default_factory=dict)
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


def pooled(y: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    out = binary_metrics(y, scores, threshold=float("nan"), flags=flags)
    out.pop("threshold")
    return out


def block_comparison(blocks: Sequence[dict[str, float]],
                     reference: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Block by block against persistence: PR-AUC lifts, F1 and the flag rate's
    ratio to the spike rate, over the blocks that hold both classes."""
    lifts, f1_wins, rate_ratios = [], 0, []
    for mine, ref in zip(blocks, reference, strict=True):
        a, b = mine.get("pr_auc", math.nan), ref.get("pr_auc", math.nan)
        if not (math.isfinite(a) and math.isfinite(b) and b > 0):
            continue
        lifts.append(a / b)
        f1_wins += int((mine.get("f1") or 0.0) >= (ref.get("f1") or 0.0))
        prevalence = mine.get("prevalence") or 0.0
        if prevalence > 0:
            rate_ratios.append((mine.get("flag_rate") or 0.0) / prevalence)
    n = len(lifts)
    return {
        "blocks": n,
        "pr_auc_beats_persistence": int(sum(lift > 1.0 for lift in lifts)),
        "f1_at_least_persistence": f1_wins,
        "pr_auc_lift_median": float(np.median(lifts)) if n else math.nan,
        "pr_auc_lift_min": float(np.min(lifts)) if n else math.nan,
        "flag_rate_over_prevalence": [round(r, 3) for r in rate_ratios],
    }


def run_walk_forward(
    eval_rows: pd.DataFrame,
    train_rows: pd.DataFrame,
    folds: Sequence[Fold],
    model_names: Sequence[str],
    seed: int = 0,
    progress: bool = True,
    purge_s: float = 120.0,
) -> WalkForwardResult:
    y = eval_rows["spike"].to_numpy(dtype=np.int64)
    persistence = persistence_probability(eval_rows["persistence"].to_numpy())
    fitted_names = [*model_names, ZSCORE]
    names = [*fitted_names, PERSISTENCE]
    evaluations = {name: ModelEvaluation(name) for name in names}
    pieces: list[pd.DataFrame] = []
    importances: dict[str, list[dict[str, float]]] = {name: [] for name in model_names}

    steps = tqdm(total=len(folds) * len(fitted_names), desc="walk-forward", unit="fit",
                 disable=not progress)
    for fold in folds:
        test_rows = eval_rows.iloc[fold.test]
        fit_rows = train_rows.iloc[fold.fit]
        piece = pd.DataFrame({"fold": fold.index, "ts": test_rows["ts"].to_numpy(),
                              "y": y[fold.test]})
        for name in names:
            if name == PERSISTENCE:
                test_p, threshold = persistence[fold.test], PERSISTENCE_THRESHOLD
            else:
                fitted = fit_candidate(name, fit_rows, seed=seed, purge_s=purge_s)
                test_p, threshold = fitted.score(test_rows), fitted.threshold
                if name in importances:
                    importances[name].append(
                        feature_importance(fitted.model, MODEL_SPECS[name].features))
                steps.update()
            evaluations[name].folds.append(
                {"fold": fold.index, **binary_metrics(y[fold.test], test_p, threshold)})
            piece[name] = test_p
            piece[f"{name}_flag"] = test_p >= threshold
        pieces.append(piece)
    steps.close()

    predictions = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
    if len(predictions):
        test_rows_all = np.concatenate([f.test for f in folds])
        predictions["regime"] = regimes(eval_rows["tau"].to_numpy())[test_rows_all]
    for name, ev in evaluations.items():
        if len(predictions):
            ev.overall = pooled(predictions["y"].to_numpy(), predictions[name].to_numpy(),
                                predictions[f"{name}_flag"].to_numpy())
        ev.per_block = block_comparison(ev.folds, evaluations[PERSISTENCE].folds)
        if importances.get(name):
            used = MODEL_SPECS[name].features
            ev.importance = {f: float(np.mean([imp.get(f, 0.0) for imp in importances[name]]))
                             for f in used}
    ts_eval, ts_train = eval_rows["ts"].to_numpy(), train_rows["ts"].to_numpy()
    described = [f.describe(ts_eval, ts_train) for f in folds]
    return WalkForwardResult(models=evaluations, predictions=predictions, folds=described)
