"""The API's Prometheus metrics (names and labels: docs/metrics.md)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

REQUESTS = Counter(
    "cryptovol_api_requests_total", "HTTP requests", ["endpoint", "method", "status"]
)
REQUEST_LATENCY = Histogram(
    "cryptovol_api_request_latency_seconds",
    "HTTP request latency",
    ["endpoint", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
INFERENCE_LATENCY = Histogram(
    "cryptovol_api_inference_latency_seconds",
    "model scoring time per batch",
    ["model_variant"],
    buckets=_LATENCY_BUCKETS,
)
ROWS_SCORED = Counter(
    "cryptovol_api_rows_scored_total", "rows scored", ["model_variant", "model_version"]
)
SPIKES = Counter(
    "cryptovol_api_spikes_total", "rows flagged as spikes", ["model_variant", "model_version"]
)
ROWS_WITHOUT_INPUTS = Counter(
    "cryptovol_api_rows_without_inputs_total",
    "rows scored that carried none of the model's features (scored as a typical row)",
)
MODEL_INFO = Gauge(
    "cryptovol_api_model_info",
    "1 for the loaded model",
    ["model_name", "model_version", "model_variant", "sha256"],
)
MODEL_LOADED = Gauge("cryptovol_api_model_loaded", "1 when a model is loaded, else 0")
SHADOW_INFO = Gauge(
    "cryptovol_api_shadow_info",
    "1 for each challenger scored beside the served model (MODEL_SHADOW)",
    ["model_name", "model_version", "model_variant", "sha256"],
)
SHADOW_ROWS = Counter(
    "cryptovol_api_shadow_rows_scored_total", "rows a challenger scored beside the served model",
    ["model_variant", "model_version"],
)
SHADOW_ERRORS = Counter(
    "cryptovol_api_shadow_errors_total",
    "requests a challenger could not score (the answer is unaffected); MODEL_SHADOW artifacts "
    "that did not load count once with reason load",
    ["model_name", "reason"],
)
SHADOW_LATENCY = Histogram(
    "cryptovol_api_shadow_inference_latency_seconds",
    "challenger scoring time per batch (added to each /predict request)",
    ["model_version"],
    buckets=_LATENCY_BUCKETS,
)
FEATURE_AGE = Gauge(
    "cryptovol_api_feature_age_seconds", "age of the newest feature row seen (event_time)"
)


FUTURE_SKEW_S = 5.0


class _NewestEventTime:
    """The newest feature event time seen; its age is computed at scrape time,
    so the gauge keeps growing when no fresh features arrive (NaN before any)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.epoch: float | None = None

    def note(self, epoch: float) -> None:
        """Ignores times in the future (beyond clock skew): one such row would
        otherwise pin the age at 0 for good."""
        if epoch > time.time() + FUTURE_SKEW_S:
            return
        with self._lock:
            if self.epoch is None or epoch > self.epoch:
                self.epoch = epoch

    def age(self) -> float:
        newest = self.epoch
        return math.nan if newest is None else max(0.0, time.time() - newest)


NEWEST_FEATURES = _NewestEventTime()
FEATURE_AGE.set_function(NEWEST_FEATURES.age)
ERRORS = Counter("cryptovol_api_errors_total", "rejected requests and failures", ["reason"])


class ScoreHistogram(Collector):
    """``cryptovol_api_score``: a histogram fed a whole batch at once with numpy
    (one ``observe`` per row would cost more than the scoring itself)."""

    name = "cryptovol_api_score"
    bounds = np.round(np.arange(0.05, 1.0001, 0.05), 2)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (variant, version) -> [per-bucket counts incl. +Inf, sum]
        self._series: dict[tuple[str, str], tuple[np.ndarray, list[float]]] = {}

    def observe_many(self, variant: str, version: str, scores: np.ndarray) -> None:
        idx = np.searchsorted(self.bounds, scores, side="left")  # le semantics
        counts = np.bincount(idx, minlength=len(self.bounds) + 1)
        total = float(scores.sum())
        with self._lock:
            series = self._series.get((variant, version))
            if series is None:
                series = self._series[(variant, version)] = (
                    np.zeros(len(self.bounds) + 1, dtype=np.int64),
                    [0.0],
                )
            series[0][:] += counts
            series[1][0] += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.name, "score distribution", labels=["model_variant", "model_version"]
        )
        with self._lock:
            items = [(k, c.copy(), s[0]) for k, (c, s) in self._series.items()]
        for (variant, version), counts, total in items:
            cumulative = np.cumsum(counts).tolist()
            buckets = [(f"{b:g}", cumulative[i]) for i, b in enumerate(self.bounds.tolist())]
            buckets.append(("+Inf", cumulative[-1]))
            family.add_metric([variant, version], buckets, total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(
            self.name, "score distribution", labels=["model_variant", "model_version"]
        )


SCORES = ScoreHistogram()
REGISTRY.register(SCORES)


def set_shadows(infos: list[dict[str, str]], failed: list[str]) -> None:
    """Publish the challengers being scored, and count the ones that did not load."""
    SHADOW_INFO.clear()
    for info in infos:
        SHADOW_INFO.labels(
            info["model_name"], info["model_version"], info["model_variant"], info["sha256"]
        ).set(1)
    for name in failed:
        SHADOW_ERRORS.labels(name, "load").inc()


def set_model(info: dict[str, str] | None) -> None:
    """Publish which model is loaded (``info`` None: none)."""
    MODEL_INFO.clear()
    if info is None:
        MODEL_LOADED.set(0)
        return
    MODEL_INFO.labels(
        info["model_name"], info["model_version"], info["model_variant"], info["sha256"]
    ).set(1)
    MODEL_LOADED.set(1)
