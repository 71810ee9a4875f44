"""Running the API for integration tests: as the real ``cryptovol-api`` process
or as uvicorn in a thread, always on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from cryptovol.devtools.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMITTED_MODELS = REPO_ROOT / "models" / "artifacts"
START_TIMEOUT_S = 120.0


def models_dir() -> Path:
    """The artifacts the suite runs against: ``MODELS_DIR`` if set, else the
    committed ones."""
    return Path(os.environ.get("MODELS_DIR", COMMITTED_MODELS))


def wait_http(url: str, timeout_s: float = 30.0, ok: tuple[int, ...] = (200,)) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code in ok:
                return r
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {ok} within {timeout_s}s (last error: {last!r})")


@contextmanager
def api_process(port: int, env: dict[str, str], ready_path: str = "/healthz") -> Iterator[str]:
    """``cryptovol-api`` as a child process; yields its base URL, stops it after."""
    full_env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": str(port), **env}
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty child never blocks
        proc = subprocess.Popen(
            [sys.executable, "-m", "cryptovol_api.main"],
            env=full_env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                # generous: model loading imports scikit-learn, slow on a busy machine
                wait_http(base + ready_path, timeout_s=START_TIMEOUT_S, ok=(200, 503))
            except TimeoutError:
                proc.kill()
                proc.wait()
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                raise AssertionError(f"API did not start: {tail}") from None
            yield base
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def api_thread(app: object) -> Iterator[str]:
    """uvicorn serving ``app`` in a thread on a free port; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", timeout_s=START_TIMEOUT_S)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)
