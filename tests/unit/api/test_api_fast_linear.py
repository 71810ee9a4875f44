"""The compiled linear model scores like scikit-learn, and is only used when it does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler

from cryptovol.runtime.artifacts import load_artifact, save_artifact
from cryptovol_api.fast_linear import CompiledLinear, compile_linear
from cryptovol_api.model import Scorer


def _data(n: int = 800, k: int = 4, seed: int = 1,
          spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.lognormal(sigma=spread, size=(n, k)) * rng.choice([1e-4, 1.0, 1e3], size=k)
    y = ((np.log(X[:, 0]) - np.log(X[:, 1]) + rng.normal(size=n)) > 0.5).astype(int)
    return X, y


PIPELINES = [
    lambda: LogisticRegression(C=0.5),
    lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.05)),
    lambda: Pipeline([  # the shape of the earlier served model: log-volatility, standardised
        ("unit", StandardScaler(with_mean=False)),
        ("log", FunctionTransformer(np.log1p)),
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(C=0.05, max_iter=2000)),
    ]),
    lambda: make_pipeline(FunctionTransformer(np.log), StandardScaler(with_std=False),
                          LogisticRegression()),
]


@pytest.mark.parametrize("factory", PIPELINES)
@pytest.mark.parametrize("spread", [1.0, 0.2])  # narrow: x - mean would go below -scale
def test_compiled_linear_equals_predict_proba(factory: object, spread: float) -> None:
    X, y = _data(spread=spread)
    model = factory().fit(X, y)  # type: ignore[operator]
    compiled = compile_linear(model)
    assert isinstance(compiled, CompiledLinear)
    probe, _ = _data(n=3000, seed=7, spread=spread)
    for batch in (probe, probe[:1], probe[:0]):
        expected = model.predict_proba(batch)[:, 1] if len(batch) else np.empty(0)
        np.testing.assert_allclose(compiled(batch), expected, rtol=1e-12, atol=1e-15)


def test_only_binary_logistic_pipelines_of_known_steps_are_compiled() -> None:
    X, y = _data()
    assert compile_linear(RandomForestClassifier(n_estimators=3).fit(X, y)) is None
    assert compile_linear(make_pipeline(MinMaxScaler(), LogisticRegression()).fit(X, y)) is None
    odd = make_pipeline(FunctionTransformer(np.tanh), LogisticRegression()).fit(X, y)
    assert compile_linear(odd) is None
    three = LogisticRegression().fit(X, y + (X[:, 2] > X[:, 2].mean()))
    assert compile_linear(three) is None


def _linear_scorer(tmp_path: Path) -> tuple[Scorer, object]:
    X, y = _data()
    features = [f"f{i}" for i in range(X.shape[1])]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    folder = tmp_path / "logistic_regression"
    save_artifact(folder, model, version="v", variant="ml", features=features, threshold=0.5,
                  imputation={f: float(np.median(X[:, j])) for j, f in enumerate(features)})
    artifact = load_artifact(folder)
    return Scorer(artifact, folder), artifact


def test_scorer_uses_the_compiled_linear_model(tmp_path: Path) -> None:
    scorer, artifact = _linear_scorer(tmp_path)
    assert scorer._score != artifact.score  # type: ignore[attr-defined]
    X, _ = _data(n=50, seed=11)
    np.testing.assert_allclose(scorer.score(X), artifact.score(X), rtol=1e-12)  # type: ignore[attr-defined]


def test_scorer_falls_back_when_the_compiled_linear_model_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Wrong:
        stages = ()

        def __call__(self, X: np.ndarray) -> np.ndarray:
            return np.full(X.shape[0], 0.5)

    monkeypatch.setattr("cryptovol_api.model.compile_linear", lambda model: Wrong())
    scorer, artifact = _linear_scorer(tmp_path)
    assert scorer._score == artifact.score  # type: ignore[attr-defined]
