"""The compiled forest scores exactly like scikit-learn, and is only used when
it does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from cryptovol.runtime.artifacts import load_artifact, save_artifact
from cryptovol_api import fast_trees
from cryptovol_api.fast_trees import CompiledForest, compile_scorer
from cryptovol_api.model import Scorer


def _data(n: int = 600, k: int = 6, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.lognormal(size=(n, k)) * rng.choice([1e-4, 1.0, 1e3], size=k)
    y = ((X[:, 0] / X[:, 0].mean() + rng.normal(scale=0.5, size=n)) > 1.2).astype(int)
    return X, y


@pytest.mark.parametrize(
    "model",
    [
        RandomForestClassifier(n_estimators=40, max_depth=8, random_state=0),
        RandomForestClassifier(n_estimators=10, random_state=1),  # unbounded depth
        ExtraTreesClassifier(n_estimators=25, min_samples_leaf=3, random_state=2),
    ],
)
def test_compiled_forest_equals_predict_proba(model: object) -> None:
    X, y = _data()
    model.fit(X, y)  # type: ignore[attr-defined]
    compiled = compile_scorer(model)
    assert isinstance(compiled, CompiledForest)
    probe, _ = _data(n=2000, seed=9)
    # rows sitting exactly on split thresholds, and just around them in float32
    tree = model.estimators_[0].tree_  # type: ignore[attr-defined]
    split = tree.feature >= 0
    edge = np.tile(X[:1], (int(split.sum()) * 3, 1))
    for i, (f, t) in enumerate(zip(tree.feature[split], tree.threshold[split], strict=True)):
        edge[3 * i, f] = t
        edge[3 * i + 1, f] = np.nextafter(np.float32(t), np.float32(np.inf))
        edge[3 * i + 2, f] = np.nextafter(t, -np.inf)
    for batch in (probe, probe[:1], edge):
        expected = model.predict_proba(batch)[:, 1]  # type: ignore[attr-defined]
        np.testing.assert_allclose(compiled(batch), expected, rtol=0, atol=1e-12)


def test_only_binary_forests_are_compiled() -> None:
    X, y = _data()
    assert compile_scorer(LogisticRegression().fit(X, y)) is None
    three = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y + (X[:, 1] > 2))
    assert compile_scorer(three) is None


def _forest_scorer(tmp_path: Path) -> tuple[Scorer, object]:
    X, y = _data()
    model = RandomForestClassifier(n_estimators=20, max_depth=6, n_jobs=2, random_state=0)
    features = [f"f{i}" for i in range(X.shape[1])]
    save_artifact(tmp_path / "random_forest", model.fit(X, y), version="v", variant="ml",
                  features=features, threshold=0.5)  # fmt: skip
    artifact = load_artifact(tmp_path / "random_forest")
    return Scorer(artifact, tmp_path / "random_forest"), artifact


def test_scorer_uses_the_compiled_forest_for_small_batches(tmp_path: Path) -> None:
    scorer, artifact = _forest_scorer(tmp_path)
    assert scorer._score is not artifact.score  # type: ignore[attr-defined]
    assert artifact.model.n_jobs == 1  # type: ignore[attr-defined]  # tuned for serving
    X, _ = _data(n=fast_trees.COMPILED_MAX_ROWS + 100, seed=5)
    np.testing.assert_allclose(scorer.score(X[:7]), artifact.score(X[:7]), atol=1e-12)
    np.testing.assert_allclose(scorer.score(X), artifact.score(X), atol=1e-12)  # large: sklearn


def test_scorer_falls_back_when_the_compiled_forest_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Wrong:
        n_trees = 1

        def __call__(self, X: np.ndarray) -> np.ndarray:
            return np.full(X.shape[0], 0.123)

    monkeypatch.setattr("cryptovol_api.model.compile_scorer", lambda model: Wrong())
    scorer, artifact = _forest_scorer(tmp_path)
    assert scorer._score == artifact.score  # type: ignore[attr-defined]
