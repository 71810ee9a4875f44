"""Evaluator configuration from environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cryptovol.core.features import FeatureConfig
from cryptovol.core.labels import LabelConfig
from cryptovol.runtime.settings import ServiceSettings
from cryptovol.runtime.worker import WorkerConfig
from cryptovol_evaluator.grading import GradingConfig
from cryptovol_evaluator.quality import Window, parse_windows


class EvaluatorSettings(ServiceSettings):
    service_name: str = "evaluator"
    metrics_port: int = Field(9105, ge=0, le=65535)
    consumer_group: str = "cryptovol-evaluator"
    topic_labelled: str = "predictions.labelled"
    quality_windows: str = Field(
        "15m,1h", description="rolling windows of event time, comma-separated (s, m, h, d)")
    quality_refresh_s: float = Field(10.0, gt=0, description="recompute the windows this often")
    # the label (defaults: docs/model_card.md); must be the one the served model was trained on
    label_horizon_s: float = Field(60.0, gt=0)
    label_window_s: float = Field(60.0, gt=0)
    label_lookback_s: float = Field(1800.0, gt=0)
    label_quantile: float = Field(0.90, gt=0, lt=1)
    # the features engine's acceptance rules (the featurizer's settings of the same names)
    feature_gap_s: float = Field(10.0, gt=0)
    feature_grace_s: float = Field(1.0, ge=0)
    feature_jump_s: float = Field(300.0, gt=0)
    expiry_s: float = Field(
        120.0, gt=0, description="past its horizon in tick time, a prediction without a label "
        "is graded no_tick")
    retention_s: float = Field(
        600.0, gt=0, description="a label waits this much prediction time for its prediction")
    rebuild_margin_s: float = Field(30.0, ge=0, description="read back this much more")
    poll_max_records: int = Field(2000, ge=1)
    poll_timeout_ms: int = Field(200, ge=1)
    produce_timeout_s: float = Field(30.0, gt=0)
    parquet_enabled: bool = True
    parquet_dir: Path | None = Field(
        None, description="labelled predictions as Parquet; default DATA_DIR/processed/labelled")
    parquet_max_rows: int = Field(20_000, ge=1)
    parquet_flush_s: float = Field(30.0, gt=0)
    lag_interval_s: float = Field(5.0, gt=0)
    stall_s: float = Field(120.0, gt=0, description="/readyz fails when the loop stalls longer")

    def windows(self) -> tuple[Window, ...]:
        return parse_windows(self.quality_windows)

    def grading_config(self) -> GradingConfig:
        longest = max(w.seconds for w in self.windows())
        return GradingConfig(
            label=LabelConfig(horizon_s=self.label_horizon_s, window_s=self.label_window_s,
                              lookback_s=self.label_lookback_s, quantile=self.label_quantile),
            features=FeatureConfig(gap_s=self.feature_gap_s, grace_s=self.feature_grace_s,
                                   jump_s=self.feature_jump_s),
            expiry_s=self.expiry_s, retention_s=self.retention_s,
            memory_s=max(longest, self.retention_s + self.expiry_s + self.label_horizon_s))

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(
            inputs=(self.topic_raw, self.topic_predictions), max_records=self.poll_max_records,
            poll_timeout_ms=self.poll_timeout_ms, produce_timeout_s=self.produce_timeout_s,
            lag_interval_s=self.lag_interval_s, stall_s=self.stall_s)

    def sink_dir(self) -> Path:
        return self.parquet_dir or self.data_dir / "processed" / "labelled"
