"""Consumer configuration from environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cryptovol.runtime.settings import ServiceSettings
from cryptovol.runtime.worker import WorkerConfig


class ConsumerSettings(ServiceSettings):
    service_name: str = "consumer"
    metrics_port: int = Field(9103, ge=0, le=65535)
    api_url: str = "http://127.0.0.1:8000"
    consumer_group: str = "cryptovol-consumer"
    batch_size: int = Field(100, ge=1, le=1000, description="rows per /predict call at most")
    batch_linger_ms: int = Field(200, ge=0, description="wait this long to fill a batch")
    rate_limit_rps: float = Field(50.0, ge=0, description="/predict calls per second; 0 = no limit")
    api_timeout_s: float = Field(5.0, gt=0)
    retry_base_s: float = Field(0.2, gt=0, description="first retry delay (doubles each time)")
    retry_max_s: float = Field(10.0, gt=0, description="longest retry delay")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open the breaker")
    breaker_reset_s: float = Field(5.0, gt=0, description="open time before one trial call")
    log_predictions: bool = False
    prediction_log_dir: Path = Path("logs/predictions")
    predict_warmup: bool = Field(False, description="also score rows whose windows are not full")
    produce_timeout_s: float = Field(10.0, gt=0)
    lag_interval_s: float = Field(5.0, gt=0)

    def worker_config(self) -> WorkerConfig:
        """Batches of up to ``batch_size`` rows (one /predict call each), waiting
        ``batch_linger_ms`` to fill; /readyz fails when the loop stalls for three
        API timeouts (a minute at least)."""
        return WorkerConfig(
            inputs=(self.topic_features,), max_records=self.batch_size,
            linger_ms=self.batch_linger_ms, poll_timeout_ms=500,
            produce_timeout_s=self.produce_timeout_s, lag_interval_s=self.lag_interval_s,
            stall_s=max(60.0, 3 * self.api_timeout_s), retry_base_s=self.retry_base_s,
            retry_max_s=self.retry_max_s)
