"""The pure scoring contract and the drift reference: one imputation rule, clear
refusals, a PSI that is zero on the reference and grows with a shift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryptovol.core.drift import PSI_LARGE, histogram, psi, reference_distributions
from cryptovol.core.scoring import (
    ContractError,
    OutsideDomain,
    PersistenceRule,
    ScoringContract,
    ZScoreRule,
    checked_scores,
    rule_from_dict,
)


def test_contract_prepares_rows_and_reports_what_it_filled() -> None:
    contract = ScoringContract(["a", "b"], {"a": 1.5}, 0.3)
    batch = contract.prepare([{"a": 2.0, "b": 3.0, "x": 9.0}, {"b": None}, {}])
    np.testing.assert_array_equal(batch.X, [[2.0, 3.0], [1.5, 0.0], [1.5, 0.0]])
    assert batch.imputed == [[], ["a", "b"], ["a", "b"]]
    assert batch.ignored == ["x"] and batch.without_inputs == [1, 2]
    assert contract.imputation == {"a": 1.5, "b": 0.0}
    single = ScoringContract(["a"], {}, 0.5)  # one feature: itemgetter returns a bare value
    np.testing.assert_array_equal(single.prepare([{"a": 4.0}]).X, [[4.0]])


@pytest.mark.parametrize(
    ("features", "imputation", "threshold"),
    [([], {}, 0.5), (["a", "a"], {}, 0.5), (["a"], {"a": math.inf}, 0.5), (["a"], {}, 1.5)],
)
def test_contracts_that_cannot_score_are_refused(features, imputation, threshold) -> None:
    with pytest.raises(ContractError):
        ScoringContract(features, imputation, threshold)


def test_scores_must_be_probabilities_of_every_row() -> None:
    np.testing.assert_array_equal(checked_scores([0.2, 1.0 + 1e-12], 2), [0.2, 1.0])
    with pytest.raises(OutsideDomain, match="rows 1"):
        checked_scores([0.2, math.nan], 2)
    with pytest.raises(RuntimeError, match="3 scores for 2 rows"):
        checked_scores([0.1, 0.2, 0.3], 2)


def test_rules_round_trip_through_their_dicts() -> None:
    for rule in (ZScoreRule("a", {"feature": "b"}["feature"], 0.5), PersistenceRule()):
        assert rule_from_dict(rule.to_dict()) == rule
    with pytest.raises(ValueError, match="unknown rule kind"):
        rule_from_dict({"kind": "magic"})
    X = np.array([[0.0], [1.0], [np.inf], [np.nan]])
    np.testing.assert_allclose(PersistenceRule().score(X, ["persistence_ratio"]),
                               [0.0, 0.5, 1.0, 0.0])


def test_psi_is_zero_on_the_reference_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=20_000)
    ref = histogram(base)
    assert len(ref["fractions"]) == len(ref["edges"]) + 1 == 10
    assert sum(ref["fractions"]) == pytest.approx(1.0) and ref["missing"] == 0.0
    assert psi(ref, base) == pytest.approx(0.0, abs=1e-12)
    assert psi(ref, rng.normal(size=5000)) < 0.02
    assert psi(ref, rng.normal(1.0, 1.0, size=5000)) > PSI_LARGE
    with_gaps = np.r_[rng.normal(size=5000), np.full(2000, np.nan)]
    assert psi(ref, with_gaps) > 0.1  # missing values are a shift too
    assert math.isnan(psi(ref, []))


def test_reference_distributions_cover_every_input_and_the_score() -> None:
    X = np.column_stack([np.arange(100.0), np.ones(100)])
    ref = reference_distributions(X, ["a", "b"], np.linspace(0, 1, 100))
    assert set(ref["features"]) == {"a", "b"} and ref["score"]["n"] == 100
    assert ref["features"]["b"]["edges"] == [1.0]  # a constant: one cut, duplicates dropped
    assert psi(ref["features"]["b"], np.ones(10)) == pytest.approx(0.0, abs=1e-12)
