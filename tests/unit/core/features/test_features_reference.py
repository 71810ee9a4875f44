"""The incremental engine against the naive reference, feature by feature."""

from __future__ import annotations

import pytest
from features_reference import reference_rows
from features_testkit import T0, assert_matches_reference, run_engine, tick, tick_streams
from hypothesis import HealthCheck, given, settings

from cryptovol.core.features import CONTEXT_FEATURES, FEATURE_NAMES, FeatureConfig, FeatureEngine
from cryptovol.core.ticks import Tick

# long generated streams are the point here
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def test_feature_names_are_stable_and_unique() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == 37
    for w in (30, 60, 300):
        for name in ("rv", "bpv", "logret", "parkinson", "n", "spread_bps", "imbalance"):
            assert f"{name}_{w}s" in FEATURE_NAMES
    assert FEATURE_NAMES[24:27] == ("ret_mean", "ret_std", "n")  # the positions models saw
    assert FEATURE_NAMES[27:] == CONTEXT_FEATURES


@PROPERTY
@given(ticks=tick_streams(max_ticks=200, calm=True))
def test_every_feature_matches_the_naive_reference(ticks: list[Tick]) -> None:
    """Warm windows, out-of-order, late, redelivered and duplicate ticks."""
    assert_matches_reference(run_engine(FeatureEngine(), ticks), reference_rows(ticks))


@PROPERTY
@given(ticks=tick_streams(max_ticks=120))
def test_reference_holds_across_gaps_and_clock_jumps(ticks: list[Tick]) -> None:
    assert_matches_reference(run_engine(FeatureEngine(), ticks), reference_rows(ticks))


@PROPERTY
@given(ticks=tick_streams(max_ticks=200, products=1, calm=True))
def test_reference_holds_while_lists_are_compacted(ticks: list[Tick], small_chunks: None) -> None:
    assert_matches_reference(run_engine(FeatureEngine(), ticks), reference_rows(ticks))


@PROPERTY
@given(ticks=tick_streams(max_ticks=80))
def test_other_gap_and_grace_settings(ticks: list[Tick]) -> None:
    config = FeatureConfig(gap_s=3.0, grace_s=0.0, jump_s=60.0)
    assert_matches_reference(run_engine(FeatureEngine(config), ticks),
                             reference_rows(ticks, config))


def test_first_tick_of_a_segment() -> None:
    engine = FeatureEngine()
    res = engine.step(tick("BTC-USD", "a", T0, 100.0, 99.99, 100.01, 1.0, 3.0))
    assert res is not None and res.warmup and res.segment == 0
    f = dict(zip(FEATURE_NAMES, res.values, strict=True))
    assert f["rv_30s"] == f["bpv_300s"] == f["logret_60s"] == f["parkinson_300s"] == 0.0
    assert f["n_30s"] == 1.0 and f["n"] == 0.0
    assert f["spread_bps_30s"] == pytest.approx(2.0)
    assert f["imbalance_300s"] == pytest.approx(-0.5)
    for undefined in ("dt_prev", "ret_mean", "ret_std", "vol_ratio_30_300"):
        assert f[undefined] != f[undefined]  # NaN


def test_window_edges_are_half_open() -> None:
    """A tick exactly w seconds old is the window's reference, not part of it."""
    engine = FeatureEngine()
    for k in range(7):  # every 5 s: t = 0, 5, ..., 30
        res = engine.step(tick("X", str(k), T0 + k * 5_000_000, 100.0 + k))
    assert res is not None
    f = dict(zip(FEATURE_NAMES, res.values, strict=True))
    assert f["n_30s"] == 6.0  # t = 5 .. 30
    assert f["logret_30s"] == pytest.approx(0.058268908, rel=1e-8)  # log(106 / 100)
    assert f["n_60s"] == 7.0 and f["n"] == 6.0
