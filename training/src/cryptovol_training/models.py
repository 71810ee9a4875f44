"""The candidate models and the baselines.

Every learned model is a plain scikit-learn estimator over columns of the
feature row as served (``cryptovol.core.features.FEATURE_NAMES``), so the artifact
needs nothing but scikit-learn to score. Missing values are filled with the
medians of the fitting rows before fitting and scoring: the same values the
API uses for a field a request omits (``metadata.imputation``), applied by the
same code (``cryptovol.core.scoring.ScoringContract``).

The label is relative to the last 30 minutes, so the served logistic
regression sees only regime-relative inputs: the last 30 s, 60 s and 300 s of
volatility measured against ``tau`` (``rel_rv_*``) and how far ``tau`` sits
above the typical minute (``q90_excess_30m``), all from the engine's
30-minute context. No absolute level: what it learns on a calm day holds on
a busy one (docs/model_card.md has the evidence).

Baselines:

- z-score: ``Phi((log vol_ratio_60_300 - mu) / sigma)``: how unusual the last
  minute's volatility is against the last five minutes', in standard units of
  the fitting rows (``mu``, ``sigma``); served as the ``baseline`` variant.
- persistence: ``RV_60 / tau`` as a probability ``r / (1 + r)`` (so 0.5 means
  "this minute is already at the spike threshold"), threshold 0.5. As a
  reference it takes ``tau`` from the label code; as a servable artifact
  (``persistence_rule``) the engine's ``persistence`` feature, the same ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from cryptovol.core.features import FEATURE_NAMES
from cryptovol.core.scoring import PersistenceRule, ZScoreRule

FEATURES: tuple[str, ...] = tuple(FEATURE_NAMES)

ZSCORE_FEATURE = "vol_ratio_60_300"
PERSISTENCE = "persistence"  # the reference (tau from the label code)
PERSISTENCE_RULE = "persistence_rule"  # the servable artifact (the engine's ratio)
ZSCORE = "baseline"
PERSISTENCE_THRESHOLD = 0.5

#: Regime-relative inputs of the served logistic regression (engine features).
RELATIVE_FEATURES = ("rel_rv_30s", "rel_rv_60s", "rel_rv_300s", "q90_excess_30m")
#: Absolute log-volatility at three horizons: the earlier served model's inputs.
HAR_FEATURES = ("rv_30s", "rv_60s", "rv_300s")


def make_logistic_regression(seed: int) -> Any:
    """Logistic regression on the regime-relative inputs (already logarithms),
    standardised."""
    return Pipeline([
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(C=0.05, max_iter=2000, random_state=seed)),
    ])


def make_har_logistic(seed: int) -> Any:
    """The earlier served model: ``log1p(rv / sd)`` of each window, standardised
    (log-volatility at three horizons, in the spirit of HAR-RV forecasting)."""
    return Pipeline([
        ("unit", StandardScaler(with_mean=False)),
        ("log", FunctionTransformer(np.log1p)),
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(C=0.05, max_iter=2000, random_state=seed)),
    ])


def make_random_forest(seed: int) -> Any:
    return RandomForestClassifier(
        n_estimators=100, min_samples_leaf=100, max_features=0.3, max_depth=8,
        n_jobs=2, random_state=seed,
    )


def make_gradient_boosting(seed: int) -> Any:
    return HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.05, max_depth=3, min_samples_leaf=200,
        l2_regularization=1.0, early_stopping=False, random_state=seed,
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[[int], Any]
    description: str
    features: tuple[str, ...] = FEATURES  # the model's input columns, in order


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("logistic_regression", make_logistic_regression,
                  "L2 logistic regression (C=0.05) on the regime-relative inputs "
                  "rel_rv_30s, rel_rv_60s, rel_rv_300s, q90_excess_30m, standardised",
                  RELATIVE_FEATURES),
        ModelSpec("har_logistic", make_har_logistic,
                  "L2 logistic regression (C=0.05) on log1p(rv/sd) of rv_30s, rv_60s, rv_300s "
                  "(absolute levels: the earlier served model)",
                  HAR_FEATURES),
        ModelSpec("random_forest", make_random_forest,
                  "100 trees, depth <= 8, >= 100 rows a leaf, 30 % of features a split, "
                  "all features"),
        ModelSpec("gradient_boosting", make_gradient_boosting,
                  "histogram gradient boosting, 100 rounds of depth-3 trees, lr 0.05, "
                  "all features"),
    )
}
#: Shipped by default. Gradient boosting is evaluated on request (--models) but did
#: not beat persistence out of time (docs/model_card.md), so it is not shipped.
DEFAULT_MODELS: tuple[str, ...] = ("logistic_regression", "random_forest", "har_logistic")


class ConstantModel:
    """Stands in when the fitting rows hold one class only: scores the base rate."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = np.full(len(X), self.rate)
        return np.column_stack([1 - p, p])


def imputation_values(X: np.ndarray, features: Sequence[str]) -> dict[str, float]:
    """Median of each feature over the fitting rows (0.0 where a column has no value)."""
    values: dict[str, float] = {}
    for j, name in enumerate(features):
        column = X[:, j]
        column = column[np.isfinite(column)]
        values[name] = float(np.median(column)) if len(column) else 0.0
    return values


def fit_model(name: str, X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Fit a candidate on ``X`` (its own feature columns, imputed)."""
    if len(np.unique(y)) < 2:
        return ConstantModel(float(np.mean(y)) if len(y) else 0.0)
    return MODEL_SPECS[name].factory(seed).fit(X, y)


def fit_zscore(X: np.ndarray, features: Sequence[str]) -> ZScoreRule:
    """The z-score rule with ``mu``/``sigma`` of log ``vol_ratio_60_300`` on the fitting rows."""
    x = X[:, list(features).index(ZSCORE_FEATURE)]
    logs = np.log(np.maximum(x[np.isfinite(x)], 0.0) + 1e-12)
    mu = float(np.mean(logs)) if len(logs) else 0.0
    sigma = float(np.std(logs)) if len(logs) > 1 else 1.0
    return ZScoreRule(feature=ZSCORE_FEATURE, center=mu, scale=max(sigma, 1e-6), log=True)


def persistence_probability(ratio: np.ndarray) -> np.ndarray:
    """``r / (1 + r)`` for ``r = RV_60 / tau`` (monotone, so ranking metrics are those of r):
    the persistence rule's own scoring."""
    r = np.asarray(ratio, dtype=np.float64).reshape(-1, 1)
    return PersistenceRule().score(r, [PersistenceRule().feature])


def feature_importance(model: Any, features: Sequence[str]) -> dict[str, float]:
    """Impurity importances of forests, |standardised coefficient| of the logistic
    regression; empty where the model offers neither."""
    if isinstance(model, Pipeline):
        model = model[-1]
    if hasattr(model, "feature_importances_"):
        values = np.asarray(model.feature_importances_, dtype=np.float64)
    elif hasattr(model, "coef_"):
        values = np.abs(np.asarray(model.coef_, dtype=np.float64)).ravel()
    else:
        return {}
    return {f: float(v) for f, v in zip(features, values, strict=True)}
