"""Fitting one candidate: model, scoring contract and decision threshold.

Walk-forward folds and the final fit call the same :func:`fit_candidate`, so
what is evaluated is what is shipped. A fitted candidate scores rows through
its :class:`~cryptovol.core.scoring.ScoringContract` (column order, imputation), the
code the API runs.

The decision threshold: the best-F1 threshold among those that flag at most
``FLAG_RATE_CAP`` times the spike rate, chosen on *out-of-fold* scores of the
fitting rows (each of ``threshold_folds`` contiguous time blocks scored by a
model fitted on the others, purged). Those rows span every regime the model
learned from, unlike the last slice before a test block, which holds one
regime and a few hundred rows: thresholds chosen there did not transfer in
walk-forward (docs/model_card.md). The scores are probabilities fitted by
log-loss on regime-relative inputs, so one probability threshold means the
same thing in a calm and in a busy hour.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cryptovol.core.scoring import PersistenceRule, Rule, ScoringContract
from cryptovol_training.dataset import matrix
from cryptovol_training.metrics import choose_threshold
from cryptovol_training.models import (
    MODEL_SPECS,
    PERSISTENCE_RULE,
    PERSISTENCE_THRESHOLD,
    ZSCORE,
    ZSCORE_FEATURE,
    fit_model,
    fit_zscore,
    imputation_values,
)

#: A decision may flag at most this many times the spike rate of the rows it is chosen on.
FLAG_RATE_CAP = 1.5
THRESHOLD_FOLDS = 3


@dataclass
class Fitted:
    """A candidate ready to score rows of the feature table."""

    name: str
    model: Any  # a fitted estimator with predict_proba, or a rule of cryptovol.core.scoring
    contract: ScoringContract

    @property
    def features(self) -> tuple[str, ...]:
        return self.contract.features

    @property
    def threshold(self) -> float:
        return self.contract.threshold

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        """Scores of a matrix already in column order (imputed here)."""
        X = self.contract.impute(X)
        if not len(X):
            return np.empty(0)
        return _predict(self.model, X, self.features)

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return self.score_matrix(matrix(rows, self.features))


def _predict(model: Any, X: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
    if isinstance(model, Rule):
        return np.asarray(model.score(X, features), dtype=np.float64)
    return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)


def candidate_features(name: str) -> tuple[str, ...]:
    if name == ZSCORE:
        return (ZSCORE_FEATURE,)
    if name == PERSISTENCE_RULE:
        return (PersistenceRule().feature,)
    return MODEL_SPECS[name].features


def decision_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 among thresholds flagging at most ``FLAG_RATE_CAP`` x the spike rate."""
    rate = float(np.mean(y)) if len(y) else 0.0
    return choose_threshold(y, scores, max_flag_rate=min(1.0, FLAG_RATE_CAP * max(rate, 1e-3)))


def out_of_fold_scores(
    name: str, X: np.ndarray, y: np.ndarray, ts: np.ndarray, seed: int, folds: int,
    purge_s: float,
) -> np.ndarray:
    """Each of ``folds`` contiguous time blocks scored by a model fitted on the
    other rows, minus those within ``purge_s`` of the block (label overlap)."""
    out = np.full(len(y), np.nan)
    edges = np.linspace(0, len(y), folds + 1).astype(int)
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        start, end = ts[lo], ts[hi - 1]
        keep = (ts < start - purge_s) | (ts > end + purge_s)
        if keep.sum() < 2 or len(np.unique(y[keep])) < 2:
            continue
        model = fit_model(name, X[keep], y[keep], seed)
        out[lo:hi] = model.predict_proba(X[lo:hi])[:, 1]
    return out


def fit_candidate(
    name: str, rows: pd.DataFrame, seed: int = 0, threshold_folds: int = THRESHOLD_FOLDS,
    purge_s: float = 120.0,
) -> Fitted:
    """Fit ``name`` on training rows (``train_spike`` labels, time-sorted)."""
    features = candidate_features(name)
    raw = matrix(rows, features)
    fill = imputation_values(raw, features)
    y = rows["train_spike"].to_numpy(dtype=np.int64)
    provisional = ScoringContract(features, fill, 0.5)
    X = provisional.impute(raw)
    if name == PERSISTENCE_RULE:
        model: Any = PersistenceRule()
        threshold = PERSISTENCE_THRESHOLD
    elif name == ZSCORE:
        model = fit_zscore(raw, features)
        threshold = decision_threshold(y, _predict(model, X, features))
    else:
        model = fit_model(name, X, y, seed)
        oof = out_of_fold_scores(name, X, y, rows["ts"].to_numpy(), seed, threshold_folds,
                                 purge_s)
        known = np.isfinite(oof)
        threshold = decision_threshold(y[known], oof[known]) if known.any() else 0.5
    return Fitted(name, model, ScoringContract(features, fill, threshold))
