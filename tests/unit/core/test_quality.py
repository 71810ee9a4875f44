"""The shared quality metrics: equal to scikit-learn's (the reference training used)
on random, tied, degenerate and real-sized inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from cryptovol.core.quality import (
    average_precision,
    binary_metrics,
    brier,
    calibration_bins,
    expected_calibration_error,
    roc_auc,
)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 5, 50])  # continuous scores, or heavy ties
def test_equal_to_scikit_learn(seed: int, levels: int | None) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 20_000))
    y = (rng.random(n) < rng.uniform(0.02, 0.5)).astype(int)
    p = np.clip(0.3 * y + rng.normal(0.3, 0.2, n), 0, 1)
    if levels:
        p = np.round(p * levels) / levels
    assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.1, 0.5, 0.5, 0.9, 1.0])),
                min_size=2, max_size=40))
def test_equal_to_scikit_learn_on_small_tied_sets(rows: list[tuple[bool, float]]) -> None:
    y = np.array([int(a) for a, _ in rows])
    p = np.array([b for _, b in rows])
    if 0 < y.sum() < len(y):
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p))
        assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    else:
        assert math.isnan(average_precision(y, p)) and math.isnan(roc_auc(y, p))


def test_binary_metrics_and_calibration() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.7, 0.8, 0.65, 0.2, 0.9])
    m = binary_metrics(y, p, threshold=0.65)
    assert (m["n"], m["positives"], m["prevalence"]) == (6, 3, 0.5)
    assert m["precision"] == 0.75 and m["recall"] == 1.0 and m["f1"] == pytest.approx(6 / 7)
    assert m["flag_rate"] == pytest.approx(4 / 6)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    count, mean_score, observed = calibration_bins(y, p, bins=2)
    assert count.tolist() == [2, 4] and mean_score[0] == pytest.approx(0.15)
    assert observed.tolist() == [0.0, 0.75]
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(
        (abs(0 - 0.3) + abs(3 - 3.05)) / 6)
    with pytest.raises(ValueError, match="labels for"):
        roc_auc(y, p[:3])
    assert math.isnan(brier([], []))
