"""The shadow challenger (MODEL_SHADOW): scored on every request beside the served
model, in the response and the metrics, never changing the answer; a shadow that
cannot load or cannot score leaves the API serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from api_testkit import make_client
from prometheus_client import REGISTRY

ROWS = [{"rv_60s": 0.8, "rv_300s": 1.3, "vol_ratio_60_300": 0.9, "ret_std": 0.4, "n": 20.0},
        {"rv_60s": 2.5, "rv_300s": 1.0, "vol_ratio_60_300": 1.9, "ret_std": 0.7, "n": 55.0},
        {"rv_60s": None}]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_shadow_scores_beside_the_answer_without_changing_it(models_dir: Path) -> None:
    with make_client(models_dir) as plain:
        alone = plain.post("/predict", json={"rows": ROWS}).json()
    with make_client(models_dir, model_variant="baseline") as served_baseline:
        baseline = served_baseline.post("/predict", json={"rows": ROWS}).json()
    before = _sample("cryptovol_api_shadow_rows_scored_total", model_variant="baseline",
                     model_version="v-test-baseline")
    with make_client(models_dir, model_shadow="baseline") as client:
        body = client.post("/predict", json={"rows": ROWS}).json()
        version = client.get("/version").json()
        health = client.get("/health").json()
    for key in ("scores", "spikes", "threshold", "model_variant", "version", "imputed"):
        assert body[key] == alone[key], key
    (shadow,) = body["shadows"]
    assert shadow["model_name"] == "baseline" and shadow["version"] == "v-test-baseline"
    assert shadow["scores"] == baseline["scores"] and shadow["spikes"] == baseline["spikes"]
    assert shadow["threshold"] == baseline["threshold"]
    assert [s["model_name"] for s in version["shadows"]] == ["baseline"]
    assert version["shadow_errors"] == {} and health["shadow_versions"] == ["v-test-baseline"]
    after = _sample("cryptovol_api_shadow_rows_scored_total", model_variant="baseline",
                    model_version="v-test-baseline")
    assert after - before == len(ROWS)
    assert _sample("cryptovol_api_shadow_info", model_name="baseline",
                   model_version="v-test-baseline", model_variant="baseline",
                   sha256=version["shadows"][0]["sha256"]) == 1.0


def test_a_shadow_that_cannot_load_or_is_the_served_model_is_left_out(models_dir: Path) -> None:
    before = _sample("cryptovol_api_shadow_errors_total", model_name="nope", reason="load")
    with make_client(models_dir, model_shadow="nope, logistic_regression,nope") as client:
        r = client.post("/predict", json={"rows": ROWS})
        version = client.get("/version").json()
    assert r.status_code == 200 and r.json()["shadows"] == []
    assert set(version["shadow_errors"]) == {"nope"} and version["shadows"] == []
    assert _sample("cryptovol_api_shadow_errors_total", model_name="nope", reason="load") \
        == before + 1


def test_a_shadow_that_cannot_score_leaves_the_answer_alone(models_dir: Path) -> None:
    """A challenger whose model yields NaN on these rows (outside its domain), or
    fails outright, is dropped from the response and counted; the served answer
    is unchanged."""
    with make_client(models_dir) as plain:
        alone = plain.post("/predict", json={"rows": ROWS}).json()
    with make_client(models_dir, model_shadow="baseline") as client:
        shadow = client.app.state.shadows.scorers[0]
        for failure, reason in ((lambda X: np.full(len(X), np.nan), "outside_domain"),
                                (lambda X: 1 / 0, "internal")):
            shadow._score = failure
            before = _sample("cryptovol_api_shadow_errors_total", model_name="baseline",
                             reason=reason)
            body = client.post("/predict", json={"rows": ROWS}).json()
            assert body["shadows"] == [] and body["scores"] == alone["scores"]
            assert _sample("cryptovol_api_shadow_errors_total", model_name="baseline",
                           reason=reason) == before + 1


@pytest.mark.parametrize("raw, names", [("", []), (" a, b ,a,,", ["a", "b"])])
def test_shadow_names(raw: str, names: list[str]) -> None:
    from cryptovol_api.settings import ApiSettings

    assert ApiSettings(model_shadow=raw).shadow_names == names
