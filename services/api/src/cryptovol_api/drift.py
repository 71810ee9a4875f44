"""Input and score drift of the served model: the population stability index of
each model input and of the score over the rows scored in the last
``DRIFT_WINDOW_S`` (wall time), against the reference distributions training
stored in the artifact's metadata (``cryptovol.core.drift``: deciles of the
fitting rows). Computed when Prometheus scrapes, from the imputed matrix the
model scored, so the inputs are exactly the model's view.

    cryptovol_api_feature_psi{model_version, feature}
    cryptovol_api_score_psi{model_version}
    cryptovol_api_drift_window_rows{model_version}
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cryptovol.core.drift import psi


class DriftMonitor(Collector):
    def __init__(self, reference: Mapping[str, Any] | None, features: Sequence[str], version: str,
                 window_s: float = 900.0, max_rows: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reference = reference or {}
        self.features = [f for f in features if f in self.reference.get("features", {})]
        self._columns = [list(features).index(f) for f in self.features]
        self.version = version
        self.window_s = window_s
        self.max_rows = max_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: deque[tuple[float, np.ndarray, np.ndarray]] = deque()
        self._rows = 0

    @property
    def enabled(self) -> bool:
        return bool(self.features) or "score" in self.reference

    def add(self, X: np.ndarray, scores: np.ndarray) -> None:
        if not self.enabled or not len(X):
            return
        now = self._clock()
        with self._lock:
            self._batches.append((now, X[:, self._columns].copy(), np.asarray(scores).copy()))
            self._rows += len(X)
            self._trim(now)

    def _trim(self, now: float) -> None:
        batches = self._batches
        while batches and (batches[0][0] < now - self.window_s or self._rows > self.max_rows):
            self._rows -= len(batches.popleft()[1])

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self._trim(self._clock())
            batches = list(self._batches)
        if not batches:
            return np.empty((0, len(self.features))), np.empty(0)
        return np.vstack([b[1] for b in batches]), np.concatenate([b[2] for b in batches])

    def values(self) -> tuple[dict[str, float], float, int]:
        """PSI per feature, of the score, and the rows they rest on (NaN: no rows)."""
        X, scores = self.window()
        refs = self.reference.get("features", {})
        per_feature = {f: psi(refs[f], X[:, j]) for j, f in enumerate(self.features)}
        score = psi(self.reference["score"], scores) if "score" in self.reference else np.nan
        return per_feature, float(score), len(scores)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        per_feature, score, rows = self.values()
        features = GaugeMetricFamily(
            "cryptovol_api_feature_psi", "population stability index of a model input over "
            "the drift window against the artifact's reference", labels=["model_version",
                                                                         "feature"])
        for name, value in per_feature.items():
            features.add_metric([self.version, name], value)
        yield features
        score_psi = GaugeMetricFamily(
            "cryptovol_api_score_psi", "population stability index of the score over the drift "
            "window against the artifact's reference", labels=["model_version"])
        score_psi.add_metric([self.version], score)
        yield score_psi
        window = GaugeMetricFamily("cryptovol_api_drift_window_rows",
                                   "rows scored in the drift window", labels=["model_version"])
        window.add_metric([self.version], rows)
        yield window

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
