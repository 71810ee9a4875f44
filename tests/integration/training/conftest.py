"""A real MLflow tracking server (``mlflow server``) on a free 127.0.0.1 port, with a
throw-away SQLite backend and artifact folder; stopped at the end of the module."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptovol.devtools.net import free_port

REPO = Path(__file__).resolve().parents[3]
RECORDINGS = REPO / "data" / "coinbase-ticker"
# about 75 minutes of 2025-12-06 in eight files with recording gaps between them
TRAIN_FILES = [
    "ticks_BTCUSD_20251206_011247.ndjson.gz",
    "ticks_BTCUSD_20251206_013105.ndjson.gz",
    "ticks_BTCUSD_20251206_013602.ndjson.gz",
    "ticks_BTCUSD_20251206_014850.ndjson.gz",
    "ticks_BTCUSD_20251206_015458.ndjson.gz",
    "ticks_BTCUSD_20251206_020719.ndjson.gz",
    "ticks_BTCUSD_20251206_021353.ndjson.gz",
    "ticks_BTCUSD_20251206_022901.ndjson.gz",
]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    try:
        deadline = time.monotonic() + 300  # a cold start on a loaded 2-core machine
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not become healthy within 300 s")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers, nothing else
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def train_recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recordings")
    for name in TRAIN_FILES:
        shutil.copy(RECORDINGS / name, folder / name)
    return folder
