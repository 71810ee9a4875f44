"""Environment-variable configuration shared by every service."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cryptovol.runtime.settings import ServiceSettings


def test_settings_read_the_documented_environment_variables(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "")
    monkeypatch.setenv("KAFKA_PORT", "19092")
    monkeypatch.setenv("PRODUCTS", "BTC-USD, ETH-USD")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = ServiceSettings()
    assert settings.products == ["BTC-USD", "ETH-USD"]
    assert settings.bootstrap == "127.0.0.1:19092"
    assert settings.log_level == "debug"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-bootstrap:9092")
    assert ServiceSettings().bootstrap == "kafka-bootstrap:9092"


def test_settings_reject_nonsense(monkeypatch):
    monkeypatch.setenv("KAFKA_PARTITIONS", "0")
    with pytest.raises(ValidationError):
        ServiceSettings()
