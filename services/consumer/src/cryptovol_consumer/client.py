"""HTTP client for the prediction API's ``POST /predict``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

# The only answers that blame the rows themselves: invalid values (422) or a
# batch too large (413). Any other 4xx (404, 415, 401, ...) means the API or
# API_URL is misconfigured: retried like an outage, so rows wait in Kafka
# instead of being dead-lettered wholesale.
ROW_REJECTIONS = frozenset({413, 422})


class ApiError(Exception):
    """A failed call. ``reason`` is the metric label (connect, timeout, http_4xx,
    http_5xx); ``retryable`` says whether the same request may succeed later."""

    def __init__(self, reason: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status not in ROW_REJECTIONS


@dataclass(frozen=True)
class ShadowResult:
    """A challenger's scores of the same rows (never the answer)."""

    model_variant: str
    model_version: str
    threshold: float
    scores: list[float]
    spikes: list[bool]


@dataclass(frozen=True)
class PredictResult:
    scores: list[float]
    spikes: list[bool]
    threshold: float
    model_variant: str
    model_version: str
    latency_ms: float
    shadows: tuple[ShadowResult, ...] = ()


class PredictClient:
    def __init__(
        self, api_url: str, timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._url = api_url.rstrip("/") + "/predict"
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            headers={"content-type": "application/json"},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def predict(
        self, rows: list[dict[str, Any]], event_times: list[str] | None = None
    ) -> PredictResult:
        body: dict[str, Any] = {"rows": rows}
        if event_times is not None:
            body["event_times"] = event_times
        started = time.perf_counter()
        try:
            response = self._http.post(self._url, content=orjson.dumps(body))
        except httpx.TimeoutException as exc:
            raise ApiError("timeout", f"/predict timed out: {exc!r}") from exc
        except httpx.TransportError as exc:  # refused, reset, DNS, protocol
            raise ApiError("connect", f"/predict unreachable: {exc!r}") from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        status = response.status_code
        if status >= 500:
            raise ApiError("http_5xx", f"/predict {status}: {response.text[:300]}", status=status)
        if status >= 400:
            raise ApiError("http_4xx", f"/predict {status}: {response.text[:300]}", status=status)
        return _parse(response.content, len(rows), latency_ms)


def _parse(content: bytes, n: int, latency_ms: float) -> PredictResult:
    try:
        body = orjson.loads(content)
        result = PredictResult(
            scores=[float(s) for s in body["scores"]],
            spikes=[bool(s) for s in body["spikes"]],
            threshold=float(body["threshold"]),
            model_variant=str(body["model_variant"]),
            model_version=str(body["version"]),
            latency_ms=latency_ms,
            shadows=tuple(_shadows(body.get("shadows") or [], n)),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ApiError("http_5xx", f"/predict returned an unusable body: {exc!r}") from exc
    if result.model_variant not in ("ml", "baseline"):
        raise ApiError("http_5xx", f"/predict returned model_variant {result.model_variant!r}")
    if not all(0.0 <= s <= 1.0 for s in result.scores):  # also false for NaN
        raise ApiError("http_5xx", "/predict returned scores outside [0, 1]")
    if len(result.scores) != n or len(result.spikes) != n:
        raise ApiError("http_5xx", f"/predict returned {len(result.scores)} scores for {n} rows")
    return result


def _shadows(raw: list[Any], n: int) -> list[ShadowResult]:
    """The challengers' scores that are whole and valid; a broken one is left out
    (it is only ever a comparison, never the answer)."""
    out = []
    for item in raw:
        try:
            shadow = ShadowResult(
                model_variant=str(item["model_variant"]), model_version=str(item["version"]),
                threshold=float(item["threshold"]), scores=[float(s) for s in item["scores"]],
                spikes=[bool(s) for s in item["spikes"]])
        except (KeyError, TypeError, ValueError):
            continue
        if shadow.model_variant in ("ml", "baseline") and len(shadow.scores) == n \
                and len(shadow.spikes) == n and all(0.0 <= s <= 1.0 for s in shadow.scores):
            out.append(shadow)
    return out
