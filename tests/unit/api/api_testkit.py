"""Helpers for the API tests: small, real model artifacts (written with
``cryptovol.runtime.artifacts.save_artifact``) and apps built on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from cryptovol.core.scoring import ZScoreRule
from cryptovol.runtime.artifacts import save_artifact
from cryptovol_api.app import create_app
from cryptovol_api.kafka_probe import KafkaProbe
from cryptovol_api.settings import ApiSettings

ML_FEATURES = ["rv_60s", "rv_300s", "vol_ratio_60_300", "ret_std", "n"]
ML_IMPUTATION = {"rv_60s": 1.0, "rv_300s": 1.0, "vol_ratio_60_300": 1.0, "ret_std": 0.5}
# no imputation value stored for "n": it falls back to 0.0


def build_models(root: Path) -> Path:
    rng = np.random.default_rng(7)
    X = rng.lognormal(size=(400, len(ML_FEATURES)))
    y = (X[:, 0] > 1.5).astype(int)
    model = LogisticRegression(max_iter=500).fit(X, y)
    save_artifact(
        root / "logistic_regression", model, version="v-test-lr", variant="ml",
        features=ML_FEATURES, threshold=0.5, imputation=ML_IMPUTATION,
    )  # fmt: skip
    rule = ZScoreRule(feature="rv_60s", center="rv_300s", scale=1.0, log=True)
    save_artifact(
        root / "baseline", rule, version="v-test-baseline", variant="baseline",
        features=["rv_60s", "rv_300s"], threshold=0.8, imputation={"rv_60s": 1.0, "rv_300s": 1.0},
    )  # fmt: skip
    return root


class StaticCheck:
    """A broker check that answers a fixed value and counts its calls."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self, bootstrap: str, timeout_s: float) -> bool:
        self.calls += 1
        return self.answer


def make_settings(models_dir: Path, **overrides: object) -> ApiSettings:
    values: dict[str, object] = {
        "models_dir": models_dir,
        "model_variant": "ml",
        "model_version": "logistic_regression",
        "kafka_bootstrap_servers": "127.0.0.1:1",
        "git_sha": "abc1234",
    }
    values.update(overrides)
    return ApiSettings(**values)  # type: ignore[arg-type]


def make_client(models_dir: Path, **overrides: object) -> TestClient:
    probe = KafkaProbe("127.0.0.1:1", interval_s=3600, check=StaticCheck(True))
    return TestClient(create_app(make_settings(models_dir, **overrides), probe=probe))
