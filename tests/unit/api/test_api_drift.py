"""Input and score drift of the served model: PSI against the artifact's
reference distributions, over the rows scored in the drift window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from api_testkit import make_client
from prometheus_client.parser import text_string_to_metric_families

from cryptovol.core.drift import reference_distributions
from cryptovol_api.drift import DriftMonitor

FEATURES = ("a", "b", "c")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monitor() -> tuple[DriftMonitor, Clock, np.random.Generator]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 3))
    reference = reference_distributions(X, FEATURES, 1 / (1 + np.exp(-X[:, 0])))
    clock = Clock()
    return DriftMonitor(reference, FEATURES, "v1", window_s=900, clock=clock), clock, rng


def test_psi_is_small_on_the_reference_distribution_and_large_on_a_shifted_input(monitor):
    drift, clock, rng = monitor
    X = rng.normal(size=(5000, 3))
    drift.add(X, 1 / (1 + np.exp(-X[:, 0])))
    per_feature, score, rows = drift.values()
    assert rows == 5000 and max(per_feature.values()) < 0.02 and score < 0.02
    clock.now = 1000.0  # the first rows leave the window
    shifted = rng.normal(size=(5000, 3))
    shifted[:, 1] += 1.0
    drift.add(shifted, 1 / (1 + np.exp(-shifted[:, 0])))
    per_feature, score, rows = drift.values()
    assert rows == 5000
    assert per_feature["b"] > 0.25 and per_feature["a"] < 0.02 and per_feature["c"] < 0.02
    assert score < 0.02  # the score reads only `a`


def test_no_rows_no_number(monitor):
    drift, _, _ = monitor
    per_feature, score, rows = drift.values()
    assert rows == 0 and all(np.isnan(v) for v in per_feature.values()) and np.isnan(score)


def test_the_api_exports_psi_of_the_rows_it_scored():
    committed = Path(__file__).resolve().parents[3] / "models" / "artifacts"  # with references
    with make_client(committed, model_version="logistic_regression") as client:
        version = client.get("/version").json()
        rows = [{name: 0.1 * i for name in version["features"]} for i in range(50)]
        assert client.post("/predict", json={"rows": rows}).status_code == 200
        text = client.get("/metrics").text
    samples = {(s.name, s.labels.get("feature")): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("cryptovol_api_drift_window_rows", None)] == 50
    assert samples[("cryptovol_api_score_psi", None)] > 0.25  # 50 rows of one odd pattern
    assert samples[("cryptovol_api_feature_psi", "rel_rv_60s")] > 0.25
