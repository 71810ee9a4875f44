"""Metrics helpers: the batch-fed score histogram (same semantics as
prometheus_client's) and the feature-age gauge."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from cryptovol_api.metrics import ScoreHistogram


def _buckets(registry_samples: list) -> dict[str, float]:
    return {s.labels["le"]: s.value for s in registry_samples if s.name.endswith("_bucket")}


def test_same_buckets_as_a_regular_histogram() -> None:
    scores = np.array([0.0, 0.05, 0.050001, 0.1, 0.5, 0.97, 1.0, 0.33, 0.35])
    ours = ScoreHistogram()
    ours.observe_many("ml", "v1", scores[:4])
    ours.observe_many("ml", "v1", scores[4:])
    registry = CollectorRegistry()
    reference = Histogram(
        "ref", "ref", buckets=[round(b, 2) for b in ScoreHistogram.bounds], registry=registry
    )
    for s in scores:
        reference.observe(float(s))

    family = next(iter(ours.collect()))
    ref_family = next(f for f in registry.collect() if f.name == "ref")
    ref = {float(k) if k != "+Inf" else k: v for k, v in _buckets(ref_family.samples).items()}
    mine = {float(k) if k != "+Inf" else k: v for k, v in _buckets(family.samples).items()}
    assert mine == ref
    total = next(s.value for s in family.samples if s.name.endswith("_sum"))
    assert abs(total - scores.sum()) < 1e-12
    assert all(s.labels["model_variant"] == "ml" for s in family.samples)


def test_feature_age_grows_until_fresher_features_arrive() -> None:
    import math
    import time

    from cryptovol_api.metrics import _NewestEventTime

    newest = _NewestEventTime()
    assert math.isnan(newest.age())  # nothing seen yet
    newest.note(time.time() - 30)
    newest.note(time.time() - 60)  # older: ignored
    assert 30 <= newest.age() < 40
    newest.note(time.time() - 1)
    assert newest.age() < 10
