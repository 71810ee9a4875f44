"""Request metrics as a plain ASGI middleware (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
from typing import Any

from cryptovol_api.metrics import REQUEST_LATENCY, REQUESTS

# Bounded label values: every other path (scanners, typos) is "other".
KNOWN_ENDPOINTS = frozenset(
    ["/predict", "/health", "/version", "/metrics", "/healthz", "/readyz",
     "/openapi.json", "/docs", "/redoc"]
)  # fmt: skip


def endpoint_label(path: str) -> str:
    if path in KNOWN_ENDPOINTS:
        return path
    if path.startswith("/docs-assets/"):
        return "/docs-assets"
    return "other"


class MetricsMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _series(self, endpoint: str, method: str, status: int) -> tuple[Any, Any]:
        key = (endpoint, method, status)
        pair = self._children.get(key)
        if pair is None:
            labels = (endpoint, method, str(status))
            pair = self._children[key] = (
                REQUESTS.labels(*labels),
                REQUEST_LATENCY.labels(*labels),
            )
        return pair

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope.get("method", "GET")
            if method not in ("GET", "POST", "HEAD", "OPTIONS"):
                method = "other"
            count, latency = self._series(endpoint_label(scope["path"]), method, status)
            count.inc()
            latency.observe(time.perf_counter() - start)
