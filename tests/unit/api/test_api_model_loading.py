"""Model selection and the never-crash rule for missing or corrupt models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from api_testkit import make_client
from prometheus_client import REGISTRY

MINIMAL = {"rows": [{"ret_mean": 0.05, "ret_std": 0.01, "n": 50}]}


def _unavailable_count() -> float:
    labels = {"reason": "model_unavailable"}
    return REGISTRY.get_sample_value("cryptovol_api_errors_total", labels) or 0.0


def _assert_unavailable(models_dir: Path, fragment: str, **overrides: object) -> None:
    with make_client(models_dir, **overrides) as c:
        before = _unavailable_count()
        r = c.post("/predict", json=MINIMAL)
        assert r.status_code == 503
        assert r.json()["error"] == "model_unavailable"
        assert fragment in r.json()["detail"]
        assert r.json()["detail"].startswith("no model loaded: ")
        assert _unavailable_count() == before + 1

        health = c.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["model_loaded"] is False
        assert fragment in health.json()["error"]

        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert c.get("/healthz").status_code == 200

        version = c.get("/version").json()
        assert version["model_loaded"] is False
        assert version["api_version"] == "0.1.0"
        assert fragment in version["error"]
        assert REGISTRY.get_sample_value("cryptovol_api_model_loaded") == 0.0

        # bad input is still a 4xx, not a 503
        assert c.post("/predict", json={"rows": []}).status_code == 422


def test_missing_model_folder(models_dir: Path) -> None:
    _assert_unavailable(models_dir, "does not exist", model_version="no_such_model")


def test_missing_models_dir(tmp_path: Path) -> None:
    _assert_unavailable(tmp_path / "nowhere", "does not exist")


def test_checksum_mismatch_is_refused(models_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    model_file = copy / "logistic_regression" / "model.skops"
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    _assert_unavailable(copy, "checksum mismatch")


def test_garbage_metadata_is_refused(models_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    (copy / "logistic_regression" / "metadata.json").write_text("{not json")
    _assert_unavailable(copy, "invalid")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"model_variant": "champion"}, "MODEL_VARIANT='champion'"),
        ({"model_version": "../baseline"}, "MODEL_VERSION='../baseline'"),
    ],
)
def test_bad_selection_is_reported(models_dir: Path, overrides: dict, fragment: str) -> None:
    _assert_unavailable(models_dir, fragment, **overrides)


def test_rollback_to_baseline_changes_version_and_scores(models_dir: Path) -> None:
    rows = {"rows": [{"rv_60s": v, "rv_300s": 1.0, "n": 10} for v in (0.2, 1.0, 5.0)]}
    with make_client(models_dir) as ml:
        ml_version = ml.get("/version").json()
        ml_scores = ml.post("/predict", json=rows).json()
    with make_client(models_dir, model_variant="baseline") as base:
        base_version = base.get("/version").json()
        base_scores = base.post("/predict", json=rows).json()
    assert ml_version["model_variant"] == "ml" and base_version["model_variant"] == "baseline"
    assert base_version["model_version"] == "v-test-baseline"
    assert base_version["sha256"] != ml_version["sha256"]
    assert base_version["model_path"].endswith("baseline")
    assert base_scores["model_variant"] == "baseline"
    assert base_scores["threshold"] == 0.8 and ml_scores["threshold"] == 0.5
    assert base_scores["scores"] != ml_scores["scores"]
    # each model's flags come from its own threshold
    assert base_scores["spikes"] == [s >= 0.8 for s in base_scores["scores"]]
    assert base_scores["ignored_fields"] == ["n"]
    model_info = REGISTRY.get_sample_value(
        "cryptovol_api_model_info",
        {
            "model_name": "baseline",
            "model_version": "v-test-baseline",
            "model_variant": "baseline",
            "sha256": base_version["sha256"],
        },
    )
    assert model_info == 1.0


def test_version_describes_the_loaded_model(models_dir: Path) -> None:
    with make_client(models_dir) as c:
        v = c.get("/version").json()
    assert v["model_loaded"] is True
    assert v["git_sha"] == "abc1234"
    assert v["model_name"] == "logistic_regression"
    assert v["model_type"] == "LogisticRegression"
    assert v["features"] == ["rv_60s", "rv_300s", "vol_ratio_60_300", "ret_std", "n"]
    assert v["imputation"]["n"] == 0.0  # not stored: the documented 0.0 fallback
    assert len(v["sha256"]) == 64
    assert v["trained_at"].endswith("Z")


def test_single_feature_model(tmp_path: Path) -> None:
    from cryptovol.core.scoring import ZScoreRule
    from cryptovol.runtime.artifacts import save_artifact

    rule = ZScoreRule(feature="vol_ratio_60_300", center=1.0, scale=0.25, log=False)
    save_artifact(tmp_path / "baseline", rule, version="v-one", variant="baseline",
                  features=["vol_ratio_60_300"], threshold=0.9,
                  imputation={"vol_ratio_60_300": 1.0})  # fmt: skip
    rows = [{"vol_ratio_60_300": 2.0, "n": 5}, {"n": 5}, {"vol_ratio_60_300": None}]
    with make_client(tmp_path, model_variant="baseline") as c:
        body = c.post("/predict", json={"rows": rows}).json()
    assert body["spikes"] == [True, False, False]
    assert body["scores"][1] == body["scores"][2] == 0.5  # imputed 1.0 = the centre
    assert body["imputed"] == [[], ["vol_ratio_60_300"], ["vol_ratio_60_300"]]
    assert body["ignored_fields"] == ["n"]
