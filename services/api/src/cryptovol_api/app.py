"""The FastAPI application: composition root of settings, model, probe, metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import TypeAdapter, ValidationError

from cryptovol.core.timestamps import format_micros, now_micros
from cryptovol.runtime.logs import get_logger
from cryptovol_api import metrics
from cryptovol_api.buildinfo import API_VERSION, resolve_git_sha
from cryptovol_api.docs_offline import install_offline_docs
from cryptovol_api.kafka_probe import KafkaProbe
from cryptovol_api.middleware import MetricsMiddleware
from cryptovol_api.model import ModelState, OutsideDomain, Scorer, load_model, load_shadows
from cryptovol_api.schemas import (
    ErrorResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    StatusResponse,
    VersionResponse,
)
from cryptovol_api.settings import ApiSettings

log = get_logger(__name__)

_REQUEST = TypeAdapter(PredictRequest)
_MAX_REPORTED_ERRORS = 20

DESCRIPTION = """\
Scores windowed market features for short-horizon volatility spikes.

`POST /predict` takes `{"rows": [{feature: value, ...}, ...]}`. Features the
model needs but a row lacks (or sets to null) are imputed with values stored
with the model and listed per row in `imputed`; fields that are not model
features are ignored and listed in `ignored_fields`.
"""


def format_ts_epoch(epoch: float | None) -> str | None:
    return None if epoch is None else format_micros(round(epoch * 1e6))


class ApiError(Exception):
    """A request the API refuses: rendered as an :class:`ErrorResponse` with ``status``."""

    def __init__(self, status: int, reason: str, detail: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def _error_response(exc: ApiError) -> Response:
    metrics.ERRORS.labels(exc.reason).inc()
    body = ErrorResponse(error=exc.reason, detail=exc.detail)
    return Response(body.model_dump_json(), status_code=exc.status,
                    media_type="application/json")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return [
        {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in errors[:_MAX_REPORTED_ERRORS]
    ]


_ERRORS_DOC = {
    413: {"model": ErrorResponse, "description": "body over the size limit, or too many rows"},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
    422: {"model": ErrorResponse, "description": "malformed JSON or invalid rows"},
    503: {"model": ErrorResponse, "description": "no model is loaded"},
}


def _shadow_scores(shadow: Scorer, rows: list[dict[str, float | None]]) -> dict[str, Any] | None:
    """A challenger's scores of ``rows``, or None (counted) when it cannot score them:
    a shadow never fails a request nor changes its answer."""
    started = time.perf_counter()
    try:
        scores = shadow.score(shadow.prepare(rows).X)
    except OutsideDomain:
        metrics.SHADOW_ERRORS.labels(shadow.name, "outside_domain").inc()
        return None
    except Exception:
        log.exception("shadow model failed; answer unaffected", extra={"shadow": shadow.name})
        metrics.SHADOW_ERRORS.labels(shadow.name, "internal").inc()
        return None
    metrics.SHADOW_LATENCY.labels(shadow.version).observe(time.perf_counter() - started)
    metrics.SHADOW_ROWS.labels(shadow.variant, shadow.version).inc(len(rows))
    metrics.SCORES.observe_many(shadow.variant, shadow.version, scores)
    return {
        "model_name": shadow.name,
        "model_variant": shadow.variant,
        "version": shadow.version,
        "threshold": shadow.threshold,
        "scores": scores.tolist(),
        "spikes": (scores >= shadow.threshold).tolist(),
    }


def create_app(
    settings: ApiSettings | None = None,
    *,
    scorer_cls: type[Scorer] = Scorer,
    probe: KafkaProbe | None = None,
) -> FastAPI:
    settings = settings or ApiSettings()
    state: ModelState = load_model(settings, scorer_cls)
    scorer = state.scorer
    shadows = load_shadows(settings, scorer, scorer_cls)
    git_sha = resolve_git_sha(settings.git_sha)
    probe = probe or KafkaProbe(
        settings.bootstrap, settings.kafka_check_interval_s, settings.kafka_check_timeout_s
    )
    metrics.set_model(scorer.describe() if scorer else None)
    metrics.set_shadows([sh.describe() for sh in shadows.scorers], list(shadows.errors))
    shadow_versions = [sh.version for sh in shadows.scorers]
    if scorer is not None:
        # Labelled children resolved once, not per request.
        rows_scored = metrics.ROWS_SCORED.labels(scorer.variant, scorer.version)
        spikes_total = metrics.SPIKES.labels(scorer.variant, scorer.version)
        inference = metrics.INFERENCE_LATENCY.labels(scorer.variant)
        model_fields = {
            "threshold": scorer.threshold,
            "model_variant": scorer.variant,
            "model_name": scorer.name,
            "version": scorer.version,
        }
        version_body = {
            "api_version": API_VERSION,
            "git_sha": git_sha,
            "model_loaded": True,
            **scorer.describe(),
            "shadows": [sh.describe() for sh in shadows.scorers],
            "shadow_errors": shadows.errors,
        }
    else:
        version_body = {
            "api_version": API_VERSION,
            "git_sha": git_sha,
            "model_loaded": False,
            "error": state.error,
        }

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        probe.start()
        try:
            yield
        finally:
            probe.stop()

    app = FastAPI(
        title="cryptovol API",
        version=API_VERSION,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.model = state
    app.state.shadows = shadows
    app.state.probe = probe
    install_offline_docs(app)
    app.add_middleware(MetricsMiddleware)

    @app.exception_handler(ApiError)
    async def _refused(_request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return _error_response(ApiError(500, "internal", "internal error; see the API logs"))

    predict_body_schema = PredictRequest.model_json_schema()

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=_ERRORS_DOC,
        summary="Score a batch of feature rows",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": predict_body_schema}},
            }
        },
    )
    async def predict(request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        if not _is_json(content_type):
            raise ApiError(
                415,
                "content_type",
                f"Content-Type must be application/json, got {content_type or 'none'!r}",
            )
        body = await _read_body(request, settings.max_body_bytes)
        if body is None:
            raise ApiError(
                413, "body_too_large", f"request body exceeds {settings.max_body_bytes} bytes"
            )
        try:
            req = _REQUEST.validate_json(body)
        except ValidationError as exc:
            raise ApiError(422, "validation", _validation_detail(exc)) from None
        n = len(req.rows)
        if n > settings.max_rows:
            raise ApiError(
                413, "too_many_rows", f"{n} rows; at most {settings.max_rows} per request"
            )
        if req.event_times is not None:
            if len(req.event_times) != n:
                raise ApiError(
                    422,
                    "validation",
                    [{
                        "loc": ["body", "event_times"],
                        "msg": f"{len(req.event_times)} event times for {n} rows",
                        "type": "length_mismatch",
                    }],
                )  # fmt: skip
            metrics.NEWEST_FEATURES.note(max(t.timestamp() for t in req.event_times))
        if scorer is None:
            raise ApiError(503, "model_unavailable", f"no model loaded: {state.error}")

        prepared = scorer.prepare(req.rows)
        started = time.perf_counter()
        try:
            scores = scorer.score(prepared.X)
        except OutsideDomain as exc:
            raise ApiError(422, "validation", [{"loc": ["body", "rows"], "msg": str(exc),
                                                "type": "outside_domain"}]) from None
        inference.observe(time.perf_counter() - started)
        flags = scores >= scorer.threshold
        n_spikes = int(flags.sum())
        rows_scored.inc(n)
        if n_spikes:
            spikes_total.inc(n_spikes)
        metrics.SCORES.observe_many(scorer.variant, scorer.version, scores)
        warnings = scorer.warnings(prepared)
        if warnings:
            metrics.ROWS_WITHOUT_INPUTS.inc(prepared.n_without_inputs)
        challengers = [out for sh in shadows.scorers
                       if (out := _shadow_scores(sh, req.rows)) is not None]
        return {
            "scores": scores.tolist(),
            "spikes": flags.tolist(),
            **model_fields,
            "ts": format_micros(now_micros()),
            "imputed": prepared.imputed,
            "ignored_fields": prepared.ignored,
            "warnings": warnings,
            "shadows": challengers,
        }

    @app.get("/health", response_model=HealthResponse, summary="Service and dependency health")
    async def health() -> dict[str, Any]:
        connected, checked_at = probe.snapshot()
        return {
            "status": "ok" if scorer is not None else "degraded",
            "model_loaded": scorer is not None,
            "kafka_connected": connected,
            "kafka_checked_at": format_ts_epoch(checked_at),
            "model_variant": scorer.variant if scorer else None,
            "model_version": scorer.version if scorer else None,
            "shadow_versions": shadow_versions,
            "error": state.error,
        }

    @app.get("/version", response_model=VersionResponse, summary="API build and loaded model")
    async def version() -> dict[str, Any]:
        return version_body

    @app.get("/healthz", response_model=StatusResponse, response_model_exclude_none=True,
             summary="Liveness: the process answers")
    async def healthz() -> dict[str, Any]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        response_model=StatusResponse,
        response_model_exclude_none=True,
        summary="Readiness: a model is loaded",
        responses={503: {"model": StatusResponse, "description": "no model loaded"}},
    )
    async def readyz(response: Response) -> dict[str, Any]:
        if scorer is None:
            response.status_code = 503
            return {"status": "not ready", "error": state.error}
        return {"status": "ready"}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
