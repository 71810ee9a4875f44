"""Prometheus metrics of the featurizer (names and labels: docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TICKS_CONSUMED = Counter(
    "cryptovol_featurizer_ticks_consumed_total", "ticks read from ticks.raw", ["product_id"])
ROWS_EMITTED = Counter(
    "cryptovol_featurizer_rows_emitted_total", "feature rows acknowledged by ticks.features",
    ["product_id"])
TICKS_DROPPED = Counter(
    "cryptovol_featurizer_ticks_dropped_total", "ticks dropped: duplicate, late, malformed",
    ["reason"])
OUT_OF_ORDER = Counter(
    "cryptovol_featurizer_out_of_order_total",
    "ticks older than the product's last event time (within grace)", ["product_id"])
PROCESSING_LAG = Histogram(
    "cryptovol_featurizer_processing_lag_seconds",
    "exchange event time to feature row produced",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
CONSUMER_LAG = Gauge(
    "cryptovol_featurizer_consumer_lag", "records behind the end of ticks.raw", ["partition"])
STATE_REBUILD = Histogram(
    "cryptovol_featurizer_state_rebuild_seconds",
    "time to rebuild window state after an assignment",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))

for reason in ("duplicate", "late", "malformed"):
    TICKS_DROPPED.labels(reason)
