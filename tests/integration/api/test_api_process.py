"""The real ``cryptovol-api`` process: start-up, broker check, missing model."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from live_api import api_process

from cryptovol.devtools.net import free_port


def _wait_for_broker_check(base: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        body = httpx.get(f"{base}/health", timeout=5).json()
        if body["kafka_checked_at"] is not None or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_serves_with_a_real_broker(kafka_broker: object, artifacts_dir: Path) -> None:
    env = {
        "MODELS_DIR": str(artifacts_dir),
        "MODEL_VARIANT": "ml",
        "MODEL_VERSION": "random_forest",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,  # type: ignore[attr-defined]
        "GIT_SHA": "0123abc",
    }
    with api_process(free_port(), env) as base:
        health = _wait_for_broker_check(base)
        assert health["status"] == "ok"
        assert health["model_loaded"] is True
        assert health["kafka_connected"] is True
        assert httpx.get(f"{base}/readyz").status_code == 200
        version = httpx.get(f"{base}/version").json()
        assert version["git_sha"] == "0123abc"
        assert version["model_name"] == "random_forest"
        assert version["model_variant"] == "ml"
        r = httpx.post(
            f"{base}/predict", json={"rows": [{"ret_mean": 0.05, "ret_std": 0.01, "n": 50}]}
        )
        assert r.status_code == 200, r.text
        assert 0.0 <= r.json()["scores"][0] <= 1.0
        metrics = httpx.get(f"{base}/metrics").text
        assert "cryptovol_api_model_loaded 1.0" in metrics
        assert 'cryptovol_api_model_info{model_name="random_forest"' in metrics


def test_reports_an_unreachable_broker(artifacts_dir: Path) -> None:
    env = {
        "MODELS_DIR": str(artifacts_dir),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "KAFKA_CHECK_TIMEOUT_S": "0.5",
    }
    with api_process(free_port(), env) as base:
        health = _wait_for_broker_check(base)
    assert health["kafka_connected"] is False
    assert health["status"] == "ok"  # serving does not need Kafka


def test_missing_model_keeps_the_process_up(tmp_path: Path) -> None:
    env = {"MODELS_DIR": str(tmp_path / "empty"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    with api_process(free_port(), env) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        r = httpx.post(f"{base}/predict", json={"rows": [{"n": 1}]})
        assert r.status_code == 503
        assert r.json()["error"] == "model_unavailable"
        assert "does not exist" in r.json()["detail"]
        assert httpx.get(f"{base}/health").json()["status"] == "degraded"
        assert "cryptovol_api_model_loaded 0.0" in httpx.get(f"{base}/metrics").text
