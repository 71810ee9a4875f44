"""Featurizer configuration from environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cryptovol.core.features import FeatureConfig
from cryptovol.runtime.settings import ServiceSettings
from cryptovol.runtime.worker import WorkerConfig


class FeaturizerSettings(ServiceSettings):
    service_name: str = "featurizer"
    metrics_port: int = Field(9102, ge=0, le=65535)
    consumer_group: str = "cryptovol-featurizer"
    emit_interval_ms: int = Field(
        0, ge=0, description="0: a row per accepted tick; N: the first tick of each N ms of "
        "event time per product")
    feature_gap_s: float = Field(10.0, gt=0, description="no tick for longer: new segment")
    feature_grace_s: float = Field(1.0, ge=0, description="out-of-order tolerance")
    feature_jump_s: float = Field(300.0, gt=0, description="backwards clock jump limit")
    rebuild_margin_s: float = Field(
        5.0, ge=0, description="read back this much more than the windows need")
    poll_max_records: int = Field(2000, ge=1)
    poll_timeout_ms: int = Field(200, ge=1)
    produce_timeout_s: float = Field(30.0, gt=0)
    parquet_enabled: bool = True
    parquet_dir: Path | None = Field(
        None, description="append-only Parquet output; default DATA_DIR/processed/stream")
    parquet_max_rows: int = Field(50_000, ge=1, description="rows buffered before a file")
    parquet_flush_s: float = Field(10.0, gt=0, description="longest time rows stay buffered")
    lag_interval_s: float = Field(5.0, gt=0)
    stall_s: float = Field(60.0, gt=0, description="/readyz fails when the loop stalls longer")

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig(gap_s=self.feature_gap_s, grace_s=self.feature_grace_s,
                             jump_s=self.feature_jump_s)

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(
            inputs=(self.topic_raw,), max_records=self.poll_max_records,
            poll_timeout_ms=self.poll_timeout_ms, produce_timeout_s=self.produce_timeout_s,
            lag_interval_s=self.lag_interval_s, stall_s=self.stall_s)

    def sink_dir(self) -> Path:
        return self.parquet_dir or self.data_dir / "processed" / "stream"
