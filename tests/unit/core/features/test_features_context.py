"""The 30-minute context of RV_60: the label's tau in the engine, its warm-up rule,
its life across gaps and clock jumps, and a rebuild that covers it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from features_testkit import T0, tick

from cryptovol.core.features import FEATURE_NAMES, FeatureConfig, FeatureEngine, features_frame
from cryptovol.core.features.context import (
    CONTEXT_MIN_HISTORY_S,
    CONTEXT_MIN_VALUES,
    CONTEXT_QUANTILE,
    CONTEXT_S,
    RvContext,
)
from cryptovol.core.labels import LabelConfig, compute_labels
from cryptovol.core.schemas import RawTick
from cryptovol.runtime.recordings import open_recordings, read_ticks

S = 1_000_000


def _values(res: object) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, res.values, strict=True))  # type: ignore[attr-defined]


def test_the_context_rules_are_the_label_s() -> None:
    label = LabelConfig()
    assert (label.lookback_s, label.quantile) == (CONTEXT_S, CONTEXT_QUANTILE)
    assert (label.history_s, label.min_samples) == (CONTEXT_MIN_HISTORY_S, CONTEXT_MIN_VALUES)
    assert FeatureConfig().rebuild_lookback_s >= CONTEXT_S + 60


def test_quantile_interpolates_like_the_label() -> None:
    ctx = RvContext()
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 7.0]
    for k, v in enumerate(values):
        ctx.add(T0 + k * S, v)
    assert ctx.quantile() == pytest.approx(float(np.quantile(values, 0.9)))
    assert ctx.log_mean() == pytest.approx(float(np.mean(np.log(values))))
    assert ctx.log_std() == pytest.approx(float(np.std(np.log(values), ddof=1)))
    ctx.expire(T0 + CONTEXT_S * S + 2 * S)  # (t - 30 min, t]: the first three left
    assert len(ctx) == 4 and ctx.quantile() == pytest.approx(np.quantile(values[3:], 0.9))


@pytest.fixture(scope="module")
def bundled_ticks(recordings_dir: Path) -> list[RawTick]:
    return list(read_ticks(open_recordings([recordings_dir])))


def test_tau_equals_the_label_s_on_every_bundled_tick(bundled_ticks: list[RawTick]) -> None:
    frame = features_frame(bundled_ticks)
    labels = compute_labels(frame)
    has = labels["has_label"].to_numpy()
    assert has.sum() > 1000
    np.testing.assert_allclose(frame["rv60_q90_30m"].to_numpy()[has],
                               labels["tau"].to_numpy()[has], rtol=1e-9)
    np.testing.assert_allclose(frame["persistence_ratio"].to_numpy()[has],
                               labels["persistence"].to_numpy()[has], rtol=1e-9)
    # every labelled row has a warm context: only the 300 s window can still be warming
    age = frame["ts"] - frame.groupby(["product_id", "segment_id"])["ts"].transform("min")
    warming = frame["warmup"].to_numpy() & has
    assert (age.to_numpy()[warming] < 300).all()


def _feed(engine: FeatureEngine, t: int, rid: str, price: float, rx: int | None = None):
    res = engine.step(tick("X", rid, t, price, received=rx))
    assert res is not None
    return res


def test_rows_before_thirty_minutes_of_history_are_warm_up() -> None:
    engine = FeatureEngine()
    warm_at = None
    for k in range(2000):  # one tick a second, 0.01 % moves
        res = _feed(engine, T0 + k * S, f"r{k}", 100.0 * (1.0001 ** (k % 5)))
        if not res.warmup and warm_at is None:
            warm_at = k
    # RV_60 values enter from 60 s on; the oldest must be 1740 s old
    assert warm_at == 60 + CONTEXT_MIN_HISTORY_S
    v = _values(res)
    assert v["rv60_count_30m"] == CONTEXT_S  # one value a second
    assert math.isclose(v["persistence_ratio"], v["rv_60s"] / v["rv60_q90_30m"])
    assert math.isclose(v["rel_rv_60s"], math.log(v["persistence_ratio"]))


def test_the_context_spans_gaps_and_a_clock_jump_clears_it() -> None:
    engine = FeatureEngine()
    for k in range(200):
        _feed(engine, T0 + k * S, f"a{k}", 100.0 + k % 3)
    after_gap = _feed(engine, T0 + 260 * S, "gap", 100.0)  # 61 s later: a gap
    assert after_gap.segment == 1 and _values(after_gap)["rv60_count_30m"] == 140.0
    jumped = _feed(engine, T0 - 3600 * S, "jump", 100.0, rx=T0 + 300 * S)
    assert jumped.segment == 2 and _values(jumped)["rv60_count_30m"] == 0.0
    assert math.isnan(_values(jumped)["rv60_q90_30m"])


def _rows(ticks: list[tuple[int, float]], start: int) -> dict[int, tuple]:
    engine = FeatureEngine()
    out = {}
    for k in range(start, len(ticks)):
        res = engine.step(tick("X", f"r{k}", ticks[k][0], ticks[k][1]))
        out[k] = (res.time_us, res.warmup, res.values)
    return out


def _same(a: tuple, b: tuple) -> bool:
    return a[:2] == b[:2] and all(x == y or (x != x and y != y)
                                  for x, y in zip(a[2], b[2], strict=True))


def test_a_rebuild_from_the_configured_read_back_covers_the_context() -> None:
    rng = np.random.default_rng(4)
    times = T0 + np.cumsum(rng.integers(200_000, 2_000_000, 3000))
    times[1500:] += 45 * S  # a recording gap in the middle
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0, 2e-4, 3000)))
    ticks = list(zip(times.tolist(), prices.tolist(), strict=True))
    c = 2900
    lookback = round(FeatureConfig().rebuild_lookback_s * S)
    start = next(k for k, (t, _) in enumerate(ticks) if t >= ticks[c][0] - lookback)
    full, rebuilt = _rows(ticks, 0), _rows(ticks, start)
    assert all(_same(full[k], rebuilt[k]) for k in range(c, len(ticks)))
    short = _rows(ticks, next(k for k, (t, _) in enumerate(ticks) if t >= ticks[c][0] - 400 * S))
    assert not _same(full[c], short[c])  # the 300 s windows alone would not do
