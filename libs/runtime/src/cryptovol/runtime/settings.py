"""Environment-variable configuration shared by every service.

The names are the same locally and in the Helm chart (see docs/configuration.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    service_name: str = "cryptovol"
    log_level: str = "INFO"
    kafka_bootstrap_servers: str = Field(
        "", description="host:port list; empty means the local broker on 127.0.0.1:KAFKA_PORT"
    )
    kafka_port: int = 9092
    products: Annotated[list[str], NoDecode] = ["BTC-USD"]
    topic_raw: str = "ticks.raw"
    topic_features: str = "ticks.features"
    topic_predictions: str = "predictions.log"
    kafka_partitions: int = Field(3, ge=1)
    kafka_replication_factor: int = Field(1, ge=1)
    data_dir: Path = Path("data")
    metrics_port: int = Field(9100, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"

    @field_validator("products", mode="before")
    @classmethod
    def _split_products(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @property
    def bootstrap(self) -> str:
        """The brokers to talk to: explicit servers, else the local broker."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"
