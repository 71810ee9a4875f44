"""/health, /readyz, the cached broker probe, build info, docs and /metrics."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from api_testkit import StaticCheck, make_settings
from fastapi.testclient import TestClient

from cryptovol_api import buildinfo
from cryptovol_api.app import create_app
from cryptovol_api.kafka_probe import KafkaProbe


def test_health_reads_the_cached_probe_without_calling_the_broker(models_dir: Path) -> None:
    check = StaticCheck(True)
    probe = KafkaProbe("127.0.0.1:1", interval_s=3600, check=check)
    with TestClient(create_app(make_settings(models_dir), probe=probe)) as c:
        deadline = time.monotonic() + 5
        while probe.snapshot()[1] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        calls = check.calls
        bodies = [c.get("/health").json() for _ in range(20)]
    assert check.calls == calls == 1  # one background check, none per request
    assert all(b["kafka_connected"] is True for b in bodies)
    assert bodies[0]["status"] == "ok" and bodies[0]["model_loaded"] is True
    assert bodies[0]["kafka_checked_at"].endswith("Z")


def test_probe_reports_unreachable_and_failing_checks() -> None:
    down = KafkaProbe("x", check=StaticCheck(False))
    assert down.check_once() is False and down.snapshot()[0] is False

    def broken(bootstrap: str, timeout_s: float) -> bool:
        raise RuntimeError("boom")

    probe = KafkaProbe("x", check=broken)
    assert probe.check_once() is False
    assert probe.snapshot()[1] is not None


def test_probe_really_times_out_against_a_silent_port() -> None:
    # a listening socket that never answers Kafka: the real check returns False
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        probe = KafkaProbe(f"127.0.0.1:{port}", timeout_s=0.5)
        assert probe.check_once() is False
    finally:
        server.close()


def test_probe_thread_stops_promptly() -> None:
    started = threading.Event()

    def check(bootstrap: str, timeout_s: float) -> bool:
        started.set()
        return True

    probe = KafkaProbe("x", interval_s=3600, timeout_s=0.5, check=check)
    probe.start()
    assert started.wait(5)
    probe.stop()
    assert probe._thread is None


def test_readyz_and_healthz(client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/healthz").json() == {"status": "alive"}


def test_git_sha_from_env_then_git_then_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert buildinfo.resolve_git_sha("  deadbeef ") == "deadbeef"

    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert buildinfo.resolve_git_sha("") == "unknown"


def test_docs_are_served_from_local_assets(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "https://" not in html, page
    assert "/docs-assets/swagger-ui-bundle.js" in client.get("/docs").text
    assert "/docs-assets/redoc.standalone.js" in client.get("/redoc").text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = client.get(f"/docs-assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000, asset
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/version", "/metrics", "/healthz", "/readyz"} <= set(
        schema["paths"]
    )
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["rows"]


def test_metrics_endpoint_exposes_the_contract(client: TestClient) -> None:
    client.post("/predict", json={"rows": [{"n": 1}]})
    text = client.get("/metrics").text
    for name in (
        "cryptovol_api_requests_total",
        "cryptovol_api_request_latency_seconds_bucket",
        "cryptovol_api_inference_latency_seconds_bucket",
        "cryptovol_api_rows_scored_total",
        "cryptovol_api_score_bucket",
        "cryptovol_api_model_info",
        "cryptovol_api_model_loaded",
        "cryptovol_api_feature_age_seconds",
    ):
        assert name in text, name
