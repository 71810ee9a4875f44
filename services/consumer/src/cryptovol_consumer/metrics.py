"""The consumer's Prometheus metrics (names and labels: docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "cryptovol_consumer_predictions_total",
    "feature rows predicted and recorded",
    ["model_variant", "model_version"],
)
SPIKES = Counter(
    "cryptovol_consumer_spikes_total", "predicted spikes", ["model_variant", "model_version"]
)
E2E_LATENCY = Histogram(
    "cryptovol_consumer_e2e_latency_seconds",
    "exchange event time to prediction recorded",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
)
API_ERRORS = Counter("cryptovol_consumer_api_errors_total", "failed /predict calls", ["reason"])
BREAKER_STATE = Gauge(
    "cryptovol_consumer_breaker_state", "circuit breaker: 0 closed, 1 half-open, 2 open"
)
LAG = Gauge("cryptovol_consumer_lag", "records behind the end of ticks.features", ["partition"])
LAST_PREDICTION = Gauge(
    "cryptovol_consumer_last_prediction_timestamp_seconds",
    "Unix time of the newest recorded prediction",
)
LOG_FALLBACK = Counter(
    "cryptovol_consumer_prediction_log_fallback_total",
    "prediction records written to files because Kafka was unavailable",
)
ROWS_SKIPPED = Counter(
    "cryptovol_consumer_rows_skipped_total",
    "feature rows committed without a prediction (warmup rows, dead-lettered rows)",
    ["reason"],
)
