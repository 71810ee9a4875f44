"""Fuzzing the OpenAPI schema over a real socket: no input yields a 5xx, and every
answer (success or refusal) conforms to the status codes, content types and
response schemas the API publishes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from live_api import api_thread
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from cryptovol_api.app import create_app
from cryptovol_api.settings import ApiSettings


@pytest.fixture(scope="module")
def live_base(artifacts_dir: Path) -> Iterator[str]:
    api_settings = ApiSettings(
        models_dir=artifacts_dir,
        kafka_bootstrap_servers="127.0.0.1:1",  # nothing listens: kafka_connected false
        kafka_check_timeout_s=0.2,
        max_rows=1000,
    )
    with api_thread(create_app(api_settings)) as base:
        yield base


def _operations(base: str) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schema_fuzzing_finds_no_server_error_and_only_published_responses(
    live_base: str, mode: GenerationMode
) -> None:
    operations = _operations(live_base)
    assert {op.path for op in operations} >= {"/predict", "/health", "/version"}
    seen: dict[int, int] = {}
    with requests.Session() as session:
        for operation in operations:
            if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
                continue  # nothing to make invalid in a parameterless GET
            examples = 150 if operation.path == "/predict" else 10

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call(base_url=live_base, session=session)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                assert response.status_code < 500, (case.path, case.body, response.text[:500])
                case.validate_response(response, checks=CONFORMANCE)
                if case.path == "/predict" and response.status_code >= 400:
                    assert response.json()["error"] in _REASONS

            fuzz()
    assert not [code for code in seen if code >= 500]
    if mode is GenerationMode.POSITIVE:
        assert seen.get(200, 0) > 0  # valid bodies were scored
    else:
        assert sum(n for code, n in seen.items() if 400 <= code < 500) > 0


CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_schema_conformance]
_REASONS = {"validation", "content_type", "body_too_large", "too_many_rows"}


ADVERSARIAL = [
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (b'{"rows":[{"' + b"x" * 200_000 + b'":1}]}', "application/json"),
    (b'{"rows":[{"n":1}]}' + b"\x00\xff", "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b'{"rows":[{"n":1e309}]}', "application/json"),
    (b'{"rows":[{"n":-0.0,"m":5e-324}]}', "application/json"),
    (b'{"rows":[{"n":1}]}', "application/json; charset=latin-1"),
    (b'{"rows":[{"n":1}]}', "application/x-ndjson"),
    (b'{"rows":' + b'[{"n":1}],' * 1 + b'"rows":[]}', "application/json"),
]


@pytest.mark.parametrize(("body", "content_type"), ADVERSARIAL)
def test_adversarial_bodies_are_never_5xx(live_base: str, body: bytes, content_type: str) -> None:
    r = httpx.post(f"{live_base}/predict", content=body, headers={"content-type": content_type})
    assert 200 <= r.status_code < 500, r.text[:300]
    if r.status_code >= 400:
        assert r.json()["error"] in {
            "validation",
            "content_type",
            "body_too_large",
            "too_many_rows",
        }
