"""Metrics, threshold choice, baselines, walk-forward determinism."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cryptovol.core.scoring import ScoringContract
from cryptovol_training.candidates import decision_threshold, fit_candidate
from cryptovol_training.dataset import FEATURES
from cryptovol_training.metrics import binary_metrics, choose_threshold, expected_calibration_error
from cryptovol_training.models import (
    ConstantModel,
    fit_model,
    fit_zscore,
    imputation_values,
    persistence_probability,
)
from cryptovol_training.splits import SplitConfig, walk_forward
from cryptovol_training.walkforward import regimes, run_walk_forward


def test_binary_metrics_by_hand() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.6])
    m = binary_metrics(y, p, threshold=0.65)
    assert m["n"] == 8 and m["positives"] == 3 and m["prevalence"] == pytest.approx(3 / 8)
    # flagged: 0.9 (tp), 0.8 (fp), 0.7 (tp) -> precision 2/3, recall 2/3
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # average precision: ranks 1 (p=1), 3 (p=2/3), 4 (p=3/4) -> (1 + 2/3 + 3/4) / 3
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m["pr_auc_lift"] == pytest.approx(m["pr_auc"] / m["prevalence"])
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["flag_rate"] == pytest.approx(3 / 8)


def test_single_class_gives_nan_ranking_metrics_not_errors() -> None:
    m = binary_metrics(np.zeros(5, int), np.linspace(0, 1, 5), 0.5)
    assert math.isnan(m["pr_auc"]) and math.isnan(m["roc_auc"]) and math.isnan(m["recall"])
    assert m["precision"] == 0.0 and m["brier"] > 0
    assert math.isnan(binary_metrics(np.zeros(0, int), np.zeros(0), 0.5)["prevalence"])


def test_choose_threshold_maximises_f1_and_prefers_fewer_alerts() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.3, 0.8])
    assert choose_threshold(y, p, max_flag_rate=1.0) == pytest.approx(0.6)  # F1 = 1 there
    assert choose_threshold(y, p) == pytest.approx(0.8)  # at most a quarter of rows flagged
    assert choose_threshold(np.zeros(3, int), np.ones(3), default=0.42) == 0.42


def test_choose_threshold_never_flags_most_rows() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(1000) < 0.1).astype(int)
    noise = rng.random(1000)  # no skill: best plain F1 is "flag everything"
    plain = choose_threshold(y, noise, max_flag_rate=1.0)
    assert np.mean(noise >= plain) > 0.5
    threshold = choose_threshold(y, noise)
    assert np.mean(noise >= threshold) <= 0.25


def test_zscore_rule_and_persistence_mapping() -> None:
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(1.0, 0.3, size=(500, len(FEATURES))))
    rule = fit_zscore(X, FEATURES)
    scores = rule.score(X, FEATURES)
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert abs(np.median(scores) - 0.5) < 0.1  # centred on the fitting rows
    np.testing.assert_allclose(persistence_probability(np.array([0.0, 1.0, 3.0, np.nan, np.inf])),
                               [0.0, 0.5, 0.75, 0.0, 1.0], atol=1e-9)


def test_imputation_uses_fitting_medians() -> None:
    X = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    fill = imputation_values(X, ["a", "b"])
    assert fill == {"a": 2.0, "b": 0.0}
    contract = ScoringContract(["a", "b"], fill, 0.5)
    np.testing.assert_array_equal(contract.impute(X), [[1, 0], [3, 0], [2, 0]])


def test_one_class_fitting_rows_fall_back_to_base_rate() -> None:
    model = fit_model("random_forest", np.zeros((10, 3)), np.zeros(10, int), seed=0)
    assert isinstance(model, ConstantModel)
    assert (model.predict_proba(np.zeros((2, 3)))[:, 1] == 0.0).all()


def _synthetic(seed: int, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = 1_765_000_000 + np.cumsum(rng.exponential(0.5, n))
    X = np.abs(rng.normal(1e-3, 3e-4, size=(n, len(FEATURES))))
    level = np.convolve(rng.normal(0, 1, n), np.ones(200) / 200, mode="same")
    X[:, FEATURES.index("rv_60s")] *= np.exp(level)
    X[:, FEATURES.index("rel_rv_60s")] = 10 * level + rng.normal(0, 0.1, n)
    spike = (level + rng.normal(0, 0.05, n) > 0.05).astype(float)
    frame = pd.DataFrame(X, columns=list(FEATURES))
    return frame.assign(ts=ts, spike=spike, train_spike=spike,
                        persistence=np.exp(level), tau=np.exp(-level))


def test_same_data_and_seed_give_the_same_metrics() -> None:
    rows = _synthetic(7)
    folds = walk_forward(rows["ts"].to_numpy(), SplitConfig(n_blocks=4), 60.0)
    models = ("logistic_regression", "random_forest")
    first = run_walk_forward(rows, rows, folds, models, seed=3, progress=False)
    second = run_walk_forward(rows, rows, folds, models, seed=3, progress=False)
    pd.testing.assert_frame_equal(first.table(), second.table())
    pd.testing.assert_frame_equal(first.predictions, second.predictions)
    other = run_walk_forward(rows, rows, folds, ("random_forest",), seed=4, progress=False)
    assert not np.array_equal(other.predictions["random_forest"],
                              first.predictions["random_forest"])
    # the signal (in rel_rv_60s) is learnable: a model that sees it ranks better than chance
    assert first.models["logistic_regression"].overall["roc_auc"] > 0.6
    assert set(first.predictions["regime"]) <= {"calm", "normal", "volatile"}


def test_regimes_are_terciles() -> None:
    labels = regimes(np.arange(9.0))
    assert labels.tolist() == ["calm"] * 3 + ["normal"] * 3 + ["volatile"] * 3


def test_calibration_error_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0])) == 0.0
    # one bin [0.5, 0.6): mean score 0.5, observed rate 0.5 -> calibrated
    assert expected_calibration_error(y, np.full(4, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(4, 0.9)) == pytest.approx(0.4)


def test_decision_threshold_caps_the_flag_rate_at_one_and_a_half_spike_rates() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.1).astype(int)
    p = np.clip(0.1 + 0.3 * y * rng.random(2000) + 0.2 * rng.random(2000), 0, 1)
    threshold = decision_threshold(y, p)
    assert np.mean(p >= threshold) <= 1.5 * y.mean() + 1e-9


def test_a_fitted_candidate_scores_through_its_contract() -> None:
    rows = _synthetic(5, n=2000)
    rows.loc[::7, "rv_60s"] = np.nan  # missing values take the fitting median
    fitted = fit_candidate("har_logistic", rows, seed=0)
    X = fitted.contract.impute(rows[list(fitted.features)].to_numpy())
    np.testing.assert_allclose(fitted.score(rows), fitted.model.predict_proba(X)[:, 1])
    assert fitted.contract.imputation["rv_60s"] == pytest.approx(
        float(np.nanmedian(rows["rv_60s"])))
    assert 0.0 < fitted.threshold < 1.0
