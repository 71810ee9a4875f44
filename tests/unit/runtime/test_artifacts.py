"""The model artifact contract: round trip, checksum before load, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cryptovol.core.scoring import OutsideDomain, PersistenceRule, ZScoreRule
from cryptovol.runtime.artifacts import (
    ArtifactError,
    artifact_dir,
    load_artifact,
    read_metadata,
    save_artifact,
)

FEATURES = ["a", "b", "c"]


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=300)) > 0.8
    return X, y.astype(int)


@pytest.mark.parametrize(
    "model",
    [
        RandomForestClassifier(n_estimators=10, random_state=0),
        make_pipeline(StandardScaler(), LogisticRegression()),
    ],
)
def test_sklearn_round_trip_scores_equal(tmp_path: Path, model: object) -> None:
    X, y = _data()
    model.fit(X, y)  # type: ignore[attr-defined]
    meta = save_artifact(
        tmp_path / "random_forest", model, version="v1.0-random_forest", variant="ml",
        features=FEATURES, threshold=0.3, imputation={"a": 0.0, "b": 1.0, "c": 2.0},
        metrics={"pr_auc": 0.5}, training_data_fingerprint="abc", git_sha="deadbeef",
    )
    assert meta.name == "random_forest" and meta.format == "skops"
    art = load_artifact(tmp_path / "random_forest")
    expected = model.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(art.score(X), expected)
    assert art.metadata.git_sha == "deadbeef"
    assert art.metadata.threshold == 0.3


def test_prepare_imputes_missing_and_none_like_impute_does_for_tables(tmp_path: Path) -> None:
    X, y = _data()
    save_artifact(tmp_path / "m", LogisticRegression().fit(X, y), version="v1", variant="ml",
                  features=FEATURES, threshold=0.5, imputation={"a": 7.0, "c": 9.0})
    art = load_artifact(tmp_path / "m")
    batch = art.prepare([{"a": 1, "b": 2, "c": 3, "zzz": 4}, {"b": 5, "c": None}, {"zzz": 1}])
    np.testing.assert_array_equal(batch.X, [[1, 2, 3], [7, 5, 9], [7, 0, 9]])
    assert batch.imputed == [[], ["a", "c"], ["a", "b", "c"]]
    assert batch.ignored == ["zzz"] and batch.without_inputs == [2]
    table = np.array([[1, 2, 3], [np.nan, 5, np.nan], [np.nan, np.inf, np.nan]])
    np.testing.assert_array_equal(art.contract.impute(table), batch.X)  # one rule for both
    assert art.contract.warnings(batch) and "row 2" in art.contract.warnings(batch)[0]


def test_persistence_rule_scores_the_ratio(tmp_path: Path) -> None:
    save_artifact(tmp_path / "p", PersistenceRule(), version="v1", variant="ml",
                  features=["persistence_ratio"], threshold=0.5)
    art = load_artifact(tmp_path / "p")
    assert art.metadata.model_type == "persistence-rule"
    np.testing.assert_allclose(art.score(np.array([[0.0], [1.0], [3.0]])), [0.0, 0.5, 0.75])


def test_scores_outside_the_domain_are_refused(tmp_path: Path) -> None:
    class Log:  # a model that takes a logarithm of its input
        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            p = 1 / (1 + np.exp(-np.log(X[:, 0])))
            return np.column_stack([1 - p, p])

    art = load_artifact(_save_rule(tmp_path))
    art.model = Log()
    with np.errstate(invalid="ignore"), pytest.raises(OutsideDomain, match="rows 1"):
        art.score(np.array([[1.0], [-1.0]]))


def _save_rule(tmp_path: Path) -> Path:
    save_artifact(tmp_path / "r", ZScoreRule("a", 0.0, 1.0, log=False), version="v1",
                  variant="baseline", features=["a"], threshold=0.9)
    return tmp_path / "r"


def test_zscore_rule_is_normal_cdf_of_log_zscore(tmp_path: Path) -> None:
    rule = ZScoreRule(feature="rv", center="mu", scale=0.5)  # center: log(mu) = 0
    save_artifact(tmp_path / "baseline", rule, version="v1.0-baseline", variant="baseline",
                  features=["rv", "mu"], threshold=0.8)
    art = load_artifact(tmp_path / "baseline")
    assert art.metadata.format == "json-rule"
    X = np.array([[1.0, 1.0], [np.e, 1.0], [np.exp(-0.5), 1.0], [0.0, 1.0]])
    scores = art.score(X)
    np.testing.assert_allclose(scores[:3], [0.5, 0.9772498680518208, 0.15865525393145707])
    assert ZScoreRule.from_dict(rule.to_dict()) == rule
    assert 0.0 <= scores[3] < 1e-6
    assert art.contract.flags(scores).tolist() == [False, True, False, False]


def test_checksum_mismatch_is_refused_before_loading(tmp_path: Path) -> None:
    X, y = _data()
    save_artifact(tmp_path / "m", LogisticRegression().fit(X, y), version="v1", variant="ml",
                  features=FEATURES, threshold=0.5)
    # replace the model by garbage: it must fail on the checksum, not on deserialising
    (tmp_path / "m" / "model.skops").write_bytes(b"not a zip file")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(tmp_path / "m")


def test_corrupt_file_with_matching_checksum_gives_artifact_error(tmp_path: Path) -> None:
    X, y = _data()
    save_artifact(tmp_path / "m", LogisticRegression().fit(X, y), version="v1", variant="ml",
                  features=FEATURES, threshold=0.5)
    import hashlib

    (tmp_path / "m" / "model.skops").write_bytes(b"garbage")
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    meta["sha256"] = hashlib.sha256(b"garbage").hexdigest()
    (tmp_path / "m" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="cannot load"):
        load_artifact(tmp_path / "m")


def test_missing_folder_metadata_or_model(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"no metadata\.json"):
        load_artifact(tmp_path / "empty")
    save_artifact(tmp_path / "b", ZScoreRule("a", 0.0, 1.0), version="v1",
                  variant="baseline", features=["a"], threshold=0.9)
    (tmp_path / "b" / "rule.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(tmp_path / "b")
    (tmp_path / "b" / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="invalid"):
        read_metadata(tmp_path / "b")


def test_wrong_feature_count_is_refused(tmp_path: Path) -> None:
    X, y = _data()
    save_artifact(tmp_path / "m", LogisticRegression().fit(X, y), version="v1", variant="ml",
                  features=["a", "b"], threshold=0.5)
    with pytest.raises(ArtifactError, match="expects 3 features"):
        load_artifact(tmp_path / "m")


def test_score_validates_shape_and_handles_empty(tmp_path: Path) -> None:
    save_artifact(tmp_path / "b", ZScoreRule("a", 0.0, 1.0, log=False), version="v1",
                  variant="baseline", features=["a"], threshold=0.9)
    art = load_artifact(tmp_path / "b")
    assert art.score(np.empty((0, 1))).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        art.score(np.zeros((2, 3)))


def test_artifact_dir_mapping(tmp_path: Path) -> None:
    assert artifact_dir(tmp_path, "baseline", "random_forest") == tmp_path / "baseline"
    assert artifact_dir(tmp_path, "ml", "logistic_regression") == tmp_path / "logistic_regression"
    with pytest.raises(ArtifactError):
        artifact_dir(tmp_path, "ml", "../etc")
    with pytest.raises(ArtifactError):
        artifact_dir(tmp_path, "other", "x")
