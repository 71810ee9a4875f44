"""Shared fixtures. Integration tests run against one real Apache Kafka broker
per test session, started on a free port on 127.0.0.1."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptovol.runtime.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORDINGS_DIR = REPO_ROOT / "data" / "coinbase-ticker"
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[object]:
    """A running broker (``.bootstrap``, ``.port``). ``KAFKA_TEST_BOOTSTRAP``
    points the suite at an existing broker instead."""
    external = os.environ.get("KAFKA_TEST_BOOTSTRAP")
    if external:
        yield type(
            "ExternalBroker", (), {"bootstrap": external, "port": int(external.rsplit(":", 1)[1])}
        )()
        return
    from cryptovol.devtools.broker import LocalBroker

    broker = LocalBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique_name() -> str:
    """A fresh suffix for topic and group names, so tests never share state."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def kafka_settings(kafka_broker: object, unique_name: str) -> ServiceSettings:
    """Settings pointing at the test broker with per-test topic names."""
    return ServiceSettings(
        service_name="test",
        kafka_bootstrap_servers=kafka_broker.bootstrap,  # type: ignore[attr-defined]
        topic_raw=f"ticks.raw.{unique_name}",
        topic_features=f"ticks.features.{unique_name}",
        topic_predictions=f"predictions.log.{unique_name}",
        kafka_partitions=3,
    )


@pytest.fixture(scope="session")
def recordings_dir() -> Path:
    return RECORDINGS_DIR
