"""The HTTP server of the worker services: metrics and health.

Each worker serves ``/metrics`` (Prometheus), ``/health`` (JSON details),
``/healthz`` (liveness: the process answers) and ``/readyz`` (readiness: the
health function says ok) from one small background HTTP server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

HealthFn = Callable[[], tuple[bool, dict]]


def _handler_for(health_fn: HealthFn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(200, {"status": "alive"})
            elif path in ("/health", "/readyz"):
                try:
                    ok, details = health_fn()
                except Exception as exc:  # a broken check is a failed check, not a crash
                    ok, details = False, {"error": repr(exc)}
                body = {"status": "ok" if ok else "degraded", **details}
                self._json(200 if ok or path == "/health" else 503, body)
            else:
                self._json(404, {"detail": f"no route {path}"})

        def _json(self, code: int, body: dict) -> None:
            self._send(code, orjson.dumps(body, default=str), "application/json")

        def _send(self, code: int, payload: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
            pass

    return Handler


def serve_http(port: int, health_fn: HealthFn, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the metrics/health server in a daemon thread and return it
    (``server.server_address[1]`` is the bound port when ``port`` is 0)."""
    server = ThreadingHTTPServer((host, port), _handler_for(health_fn))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http-metrics", daemon=True).start()
    return server
