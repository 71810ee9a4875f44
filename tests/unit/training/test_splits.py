"""Walk-forward splits: time order, purge and embargo."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptovol_training.splits import (
    FinalTestConfig,
    SplitConfig,
    block_edges,
    final_test_start,
    purge_before,
    walk_forward,
)

H = 60.0


def _times(seed: int, n: int, gaps: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = rng.exponential(0.3, n)
    if gaps:
        dt[rng.choice(n, 5, replace=False)] += rng.uniform(30, 4000, 5)
    return 1_765_000_000 + np.cumsum(dt)


def _check(folds, ts_eval: np.ndarray, ts_train: np.ndarray, cfg: SplitConfig) -> None:
    last_test_end = -np.inf
    for fold in folds:
        test_start = ts_eval[fold.test].min()
        assert test_start == fold.test_start
        assert test_start > last_test_end  # folds move forward, tests do not overlap
        last_test_end = ts_eval[fold.test].max()
        if len(fold.fit):
            assert (ts_train[fold.fit] + H <= test_start - cfg.embargo_s).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(200, 3000), blocks=st.integers(3, 9),
       embargo=st.sampled_from([0.0, 60.0, 300.0]))
def test_purge_and_embargo_hold(seed: int, n: int, blocks: int, embargo: float) -> None:
    ts_train = _times(seed, n)
    ts_eval = ts_train[np.sort(np.random.default_rng(seed).choice(n, n // 2, replace=False))]
    cfg = SplitConfig(n_blocks=blocks, min_train_blocks=1, embargo_s=embargo)
    folds = walk_forward(ts_eval, cfg, H, ts_train)
    assert len(folds) >= 1
    _check(folds, ts_eval, ts_train, cfg)


def _segments(ts: np.ndarray) -> np.ndarray:
    return np.cumsum(np.r_[0, np.diff(ts) > 10.0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(50, 3000), frac=st.floats(0.05, 0.6))
def test_final_test_is_the_latest_share_of_recorded_time_from_a_segment_start(
    seed: int, n: int, frac: float
) -> None:
    ts = _times(seed, n)
    segments = _segments(ts)
    start = final_test_start(ts, segments, frac)
    assert start in set(ts[np.r_[0, np.flatnonzero(np.diff(segments)) + 1]])  # a segment start
    spans = {s: (ts[segments == s].min(), ts[segments == s].max()) for s in np.unique(segments)}
    total = sum(hi - lo for lo, hi in spans.values())
    after = sum(hi - lo for lo, hi in spans.values() if lo >= start)
    assert after >= frac * total or start == ts.min()
    later = [lo for lo, _ in spans.values() if lo > start]  # no later start would do
    for lo in later:
        assert sum(h - s for s, h in spans.values() if s >= lo) < frac * total


def test_final_test_can_be_disabled_and_is_validated() -> None:
    ts = _times(2, 100)
    assert final_test_start(ts, _segments(ts), 0.0) is None
    with pytest.raises(ValueError):
        FinalTestConfig(fraction=1.0)


def test_same_rows_for_training_and_evaluation() -> None:
    ts = _times(1, 5000)
    cfg = SplitConfig()
    folds = walk_forward(ts, cfg, H)
    assert [f.index for f in folds] == [0, 1, 2, 3]
    _check(folds, ts, ts, cfg)
    tested = np.concatenate([f.test for f in folds])
    assert len(np.unique(tested)) == len(tested)  # each row tested at most once
    # rows right before a test block are purged: none within H + embargo of it
    for fold in folds:
        assert not np.any(ts[fold.fit] > fold.test_start - H - cfg.embargo_s)


def test_purge_before_is_exactly_the_rule() -> None:
    ts = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    kept = purge_before(np.arange(5), ts, boundary=100.0, horizon_s=60.0, embargo_s=20.0)
    assert kept.tolist() == [0, 1, 2]  # 20 + 60 <= 100 - 20


def test_block_edges_never_split_a_timestamp() -> None:
    ts = np.repeat(np.arange(10.0), 10)
    edges = block_edges(ts, 3)
    assert edges[0] == 0 and edges[-1] == 100
    for e in edges[1:-1]:
        assert ts[e] != ts[e - 1]


def test_config_and_order_validation() -> None:
    with pytest.raises(ValueError):
        SplitConfig(n_blocks=2, min_train_blocks=2)
    with pytest.raises(ValueError):
        SplitConfig(embargo_s=-1)
    with pytest.raises(ValueError, match="sorted"):
        walk_forward(np.array([2.0, 1.0]), SplitConfig(), H)
