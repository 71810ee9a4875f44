"""POST /predict: compatibility, imputation, batch scoring and input validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from api_testkit import ML_FEATURES, make_client
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from cryptovol.core.features import FEATURE_NAMES
from cryptovol.runtime.artifacts import load_artifact

JSON = {"content-type": "application/json"}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_original_minimal_row_is_scored(client: TestClient) -> None:
    r = client.post("/predict", json={"rows": [{"ret_mean": 0.05, "ret_std": 0.01, "n": 50}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["scores"]) == 1 and 0.0 <= body["scores"][0] <= 1.0
    assert body["spikes"] == [body["scores"][0] >= body["threshold"]]
    assert body["model_variant"] == "ml"
    assert body["version"] == "v-test-lr"
    assert body["model_name"] == "logistic_regression"
    assert body["ts"].endswith("Z")
    assert body["imputed"] == [["rv_60s", "rv_300s", "vol_ratio_60_300"]]
    assert body["ignored_fields"] == ["ret_mean"]


def test_rows_without_any_model_input_are_scored_with_a_warning(client: TestClient) -> None:
    before = _sample("cryptovol_api_rows_without_inputs_total")
    rows = [{"rv_60s": 1.0}, {"ret_mean": 0.05}, {}, {"rv_60s": None}]
    r = client.post("/predict", json={"rows": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["scores"]) == 4
    assert body["scores"][1] == body["scores"][2] == body["scores"][3]  # all typical rows
    (warning,) = body["warnings"]
    assert "3 of 4 rows (row 1, 2, 3) carry none of the model's features" in warning
    assert _sample("cryptovol_api_rows_without_inputs_total") == before + 3
    full = client.post("/predict", json={"rows": [{f: 1.0 for f in ML_FEATURES}]}).json()
    assert full["warnings"] == []


def test_scores_equal_the_artifact_with_stored_imputation(
    client: TestClient, models_dir: Path
) -> None:
    artifact = load_artifact(models_dir / "logistic_regression")
    rows = [
        {"rv_60s": 2.0, "rv_300s": 1.2, "vol_ratio_60_300": 1.6, "ret_std": 0.3, "n": 40},
        {"rv_60s": 0.2, "rv_300s": None},  # null means missing
        {},
    ]
    r = client.post("/predict", json={"rows": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    fill = {**artifact.metadata.imputation}
    expected_X = np.array(
        [[row.get(f) if row.get(f) is not None else fill.get(f, 0.0) for f in ML_FEATURES]
         for row in rows]
    )  # fmt: skip
    np.testing.assert_allclose(body["scores"], artifact.score(expected_X), rtol=1e-12)
    assert body["imputed"] == [
        [],
        ["rv_300s", "vol_ratio_60_300", "ret_std", "n"],
        list(ML_FEATURES),
    ]
    assert body["ignored_fields"] == []


def test_batch_scoring_equals_row_by_row(client: TestClient) -> None:
    rng = np.random.default_rng(1)
    rows = [dict(zip(ML_FEATURES, map(float, v), strict=True)) for v in rng.lognormal(size=(50, 5))]
    batch = client.post("/predict", json={"rows": rows}).json()
    single = [client.post("/predict", json={"rows": [row]}).json()["scores"][0] for row in rows]
    np.testing.assert_allclose(batch["scores"], single, rtol=1e-12)
    assert batch["spikes"] == [s >= batch["threshold"] for s in batch["scores"]]


def test_metrics_count_rows_spikes_and_scores(client: TestClient) -> None:
    labels = {"model_variant": "ml", "model_version": "v-test-lr"}
    before_rows = _sample("cryptovol_api_rows_scored_total", **labels)
    before_spikes = _sample("cryptovol_api_spikes_total", **labels)
    before_hist = _sample("cryptovol_api_score_count", **labels)
    before_req = _sample(
        "cryptovol_api_requests_total", endpoint="/predict", method="POST", status="200"
    )
    rows = [{"rv_60s": 50.0, "rv_300s": 1.0}, {"rv_60s": 0.01, "rv_300s": 1.0}]
    event_time = (datetime.now(UTC) - timedelta(seconds=3)).isoformat()
    r = client.post("/predict", json={"rows": rows, "event_times": [event_time, event_time]})
    assert r.status_code == 200, r.text
    n_spikes = sum(r.json()["spikes"])
    assert _sample("cryptovol_api_rows_scored_total", **labels) == before_rows + 2
    assert _sample("cryptovol_api_spikes_total", **labels) == before_spikes + n_spikes
    assert _sample("cryptovol_api_score_count", **labels) == before_hist + 2
    assert (
        _sample("cryptovol_api_requests_total", endpoint="/predict", method="POST", status="200")
        == before_req + 1
    )
    assert _sample("cryptovol_api_feature_age_seconds") >= 3.0
    assert _sample("cryptovol_api_inference_latency_seconds_count", model_variant="ml") > 0


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        (b'{"rows":[{"n":NaN}]}', ["body", "rows", 0, "n"], "finite_number"),
        (b'{"rows":[{"n":Infinity}]}', ["body", "rows", 0, "n"], "finite_number"),
        (b'{"rows":[{"n":-Infinity}]}', ["body", "rows", 0, "n"], "finite_number"),
        (b'{"rows":[{"n":1e999}]}', ["body", "rows", 0, "n"], "finite_number"),
        (b'{"rows":[{"n":1e300}]}', ["body", "rows", 0, "n"], "less_than_equal"),
        (b'{"rows":[{"n":1},{"n":-2e30}]}', ["body", "rows", 1, "n"], "greater_than_equal"),
        (b'{"rows":[{"n":"50"}]}', ["body", "rows", 0, "n"], "float_type"),
        (b'{"rows":[{"n":true}]}', ["body", "rows", 0, "n"], "float_type"),
        (b'{"rows":[{"n":[1]}]}', ["body", "rows", 0, "n"], "float_type"),
        (b'{"rows":[1]}', ["body", "rows", 0], "dict_type"),
        (b'{"rows":{"n":1}}', ["body", "rows"], "list_type"),
        (b'{"rows":[]}', ["body", "rows"], "too_short"),
        (b'{"rows":null}', ["body", "rows"], "list_type"),
        (b"{}", ["body", "rows"], "missing"),
        (b'{"rows":[{"n":1}],"extra":1}', ["body", "extra"], "extra_forbidden"),
        (b"[]", ["body"], "model_type"),
        (b"", ["body"], "json_invalid"),
        (b'{"rows":[{"n":1}', ["body"], "json_invalid"),
        (b'{"rows":[{"n":1}],"event_times":["yesterday"]}', ["body", "event_times", 0],
         "datetime_from_date_parsing"),
        (b'{"rows":[{"n":1}],"event_times":["2025-01-01T00:00:00"]}',
         ["body", "event_times", 0], "timezone_aware"),
    ],
)  # fmt: skip
def test_invalid_bodies_get_precise_422(
    client: TestClient, body: bytes, loc: list, kind: str
) -> None:
    before = _sample("cryptovol_api_errors_total", reason="validation")
    r = client.post("/predict", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    payload = r.json()
    assert payload["error"] == "validation"
    assert {"loc": loc, "type": kind} in [
        {"loc": e["loc"], "type": e["type"]} for e in payload["detail"]
    ], payload
    assert _sample("cryptovol_api_errors_total", reason="validation") == before + 1


def test_event_times_must_match_rows(client: TestClient) -> None:
    r = client.post(
        "/predict", json={"rows": [{"n": 1}, {"n": 2}], "event_times": ["2025-01-01T00:00:00Z"]}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "event_times"]


def test_many_errors_are_capped(client: TestClient) -> None:
    r = client.post("/predict", json={"rows": [{"n": "x"}] * 100})
    assert r.status_code == 422
    assert len(r.json()["detail"]) == 20


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_wrong_content_type_is_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    before = _sample("cryptovol_api_errors_total", reason="content_type")
    r = client.post("/predict", content=b'{"rows":[{"n":1}]}', headers=headers)
    assert r.status_code == 415
    assert r.json()["error"] == "content_type"
    assert "application/json" in r.json()["detail"]
    assert _sample("cryptovol_api_errors_total", reason="content_type") == before + 1


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd+json"]
)
def test_json_content_type_variants_are_accepted(client: TestClient, content_type: str) -> None:
    r = client.post(
        "/predict", content=b'{"rows":[{"n":1}]}', headers={"content-type": content_type}
    )
    assert r.status_code == 200, r.text


def test_too_many_rows_is_413(models_dir: Path) -> None:
    with make_client(models_dir, max_rows=10) as c:
        ok = c.post("/predict", json={"rows": [{"n": 1}] * 10})
        assert ok.status_code == 200
        r = c.post("/predict", json={"rows": [{"n": 1}] * 11})
    assert r.status_code == 413
    assert r.json() == {"error": "too_many_rows", "detail": "11 rows; at most 10 per request"}


def test_default_limit_is_1000_rows(client: TestClient) -> None:
    assert client.post("/predict", json={"rows": [{"n": 1}] * 1000}).status_code == 200
    # ... of full featurizer rows: every feature named, at full float precision
    full = {name: 1.2345678901234567e-05 for name in FEATURE_NAMES}
    assert client.post("/predict", json={"rows": [full] * 1000}).status_code == 200
    r = client.post("/predict", json={"rows": [{"n": 1}] * 1001})
    assert r.status_code == 413 and r.json()["error"] == "too_many_rows"


def test_body_over_limit_is_413_with_and_without_content_length(client: TestClient) -> None:
    big = b'{"rows":[' + b",".join([b'{"rv_60s":1.0}'] * 300_000) + b"]}"
    assert len(big) > 4_000_000
    before = _sample("cryptovol_api_errors_total", reason="body_too_large")
    r = client.post("/predict", content=big, headers=JSON)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"

    def chunks():  # streamed: no Content-Length header, the limit applies while reading
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = client.post("/predict", content=chunks(), headers=JSON)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert _sample("cryptovol_api_errors_total", reason="body_too_large") == before + 2


def test_response_is_plain_json_with_every_field(client: TestClient) -> None:
    r = client.post("/predict", json={"rows": [{"rv_60s": 1.0}]})
    body = orjson.loads(r.content)
    assert set(body) == {
        "scores", "spikes", "threshold", "model_variant", "model_name", "version", "ts",
        "imputed", "ignored_fields", "warnings", "shadows",
    }  # fmt: skip
    assert body["shadows"] == []  # no MODEL_SHADOW
    assert r.headers["content-type"] == "application/json"


def test_wrong_method_and_unknown_path_are_4xx(client: TestClient) -> None:
    assert client.get("/predict").status_code == 405
    r = client.get("/nope")
    assert r.status_code == 404
    assert _sample("cryptovol_api_requests_total", endpoint="other", method="GET", status="404") > 0
