"""Fixtures for the API unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_testkit import build_models, make_client
from fastapi.testclient import TestClient


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[TestClient]:
    with make_client(models_dir) as c:
        yield c
