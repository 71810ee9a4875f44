"""Fixtures for the API integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from live_api import models_dir


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    folder = models_dir()
    missing = [
        n for n in ("baseline", "random_forest") if not (folder / n / "metadata.json").is_file()
    ]
    if missing:
        pytest.fail(f"model artifacts {missing} not found under {folder} (set MODELS_DIR)")
    return folder
