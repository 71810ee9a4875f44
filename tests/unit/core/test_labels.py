"""The label: against a naive reference and the table oracle (bit for bit on every
bundled tick), causal threshold, no label across gaps, final as soon as its horizon
has passed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from labels_reference import reference_labels

from cryptovol.core.labels import (
    CUT,
    LABEL_COLUMNS,
    NO_HISTORY,
    NO_PAST,
    LabelConfig,
    Labeller,
    compute_labels,
    label_end,
)

SMALL = LabelConfig(horizon_s=10.0, window_s=10.0, lookback_s=60.0, quantile=0.8,
                    min_samples=5)


def ticks(seed: int = 0, n: int = 600, gap_at: int | None = 300, products: int = 1) -> pd.DataFrame:
    """Random-walk ticks about 0.5 s apart with bursts of volatility and one gap."""
    rng = np.random.default_rng(seed)
    frames = []
    for p in range(products):
        dt = rng.uniform(0.1, 0.9, n)
        if gap_at is not None:
            dt[gap_at] = 120.0
        ts = 1_700_000_000 + np.cumsum(dt)
        vol = np.where((np.arange(n) // 50) % 3 == 0, 5e-4, 1e-4)
        price = 50_000 * np.exp(np.cumsum(rng.normal(0, vol)))
        seg = (np.diff(ts, prepend=ts[0]) > 10).cumsum()
        frames.append(pd.DataFrame({"product_id": f"P{p}", "ts": ts, "price": price,
                                    "segment_id": seg}))
    return pd.concat(frames, ignore_index=True)


def naive(frame: pd.DataFrame, cfg: LabelConfig) -> pd.DataFrame:
    """Straight from the definition, one row at a time."""
    out = []
    for _, g in frame.groupby("product_id", sort=False):
        ts, price, seg = g["ts"].to_numpy(), g["price"].to_numpy(), g["segment_id"].to_numpy()
        r = np.zeros(len(ts))
        for i in range(1, len(ts)):
            r[i] = math.log(price[i] / price[i - 1]) if seg[i] == seg[i - 1] else 0.0
        seg_start = {s: ts[seg == s].min() for s in np.unique(seg)}
        seg_end = {s: ts[seg == s].max() for s in np.unique(seg)}
        past = np.full(len(ts), np.nan)
        fwd = np.full(len(ts), np.nan)
        for i in range(len(ts)):
            same = seg == seg[i]
            if ts[i] - cfg.window_s >= seg_start[seg[i]]:
                m = same & (ts > ts[i] - cfg.window_s) & (ts <= ts[i])
                past[i] = math.sqrt(float(np.sum(r[m] ** 2)))
            if ts[i] + cfg.horizon_s <= seg_end[seg[i]]:
                m = same & (ts > ts[i]) & (ts <= ts[i] + cfg.horizon_s)
                fwd[i] = math.sqrt(float(np.sum(r[m] ** 2)))
        tau = np.full(len(ts), np.nan)
        spike = np.full(len(ts), np.nan)
        for i in range(len(ts)):
            m = (ts > ts[i] - cfg.lookback_s) & (ts <= ts[i]) & ~np.isnan(past)
            if np.isnan(past[i]) or m.sum() < cfg.min_samples:
                continue
            if ts[i] - ts[m].min() < cfg.history_s:
                continue
            tau[i] = float(np.quantile(past[m], cfg.quantile))
            if not np.isnan(fwd[i]):
                spike[i] = float(fwd[i] >= tau[i] and fwd[i] > 0)
        out.append(pd.DataFrame({"rv_past": past, "rv_fwd": fwd, "tau": tau, "spike": spike},
                                index=g.index))
    return pd.concat(out).loc[frame.index]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_reference(seed: int) -> None:
    frame = ticks(seed, products=2)
    got = compute_labels(frame, SMALL)
    want = naive(frame, SMALL)
    for col in ("rv_past", "rv_fwd", "tau", "spike"):
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-9,
                                   atol=1e-15, equal_nan=True, err_msg=col)
    assert got["has_label"].to_numpy().tolist() == (~want["spike"].isna()).tolist()
    assert got["has_label"].sum() > 100
    assert 0.0 < got.loc[got["has_label"], "spike"].mean() < 0.6


def test_threshold_and_past_window_use_only_the_past() -> None:
    """tau(t) and rv_past(t) are the same whether or not anything after t exists
    (and whatever it is): they are known at time t."""
    frame = ticks(3)
    full = compute_labels(frame, SMALL)
    rng = np.random.default_rng(9)
    for cut in (150, 420, 550):
        prefix = compute_labels(frame.iloc[: cut + 1], SMALL)
        altered = frame.copy()
        altered.loc[cut + 1:, "price"] *= np.exp(rng.normal(0, 0.01, len(frame) - cut - 1))
        changed = compute_labels(altered, SMALL)
        for col in ("tau", "rv_past", "history_s", "persistence"):
            np.testing.assert_array_equal(prefix[col].to_numpy(), full[col].to_numpy()[: cut + 1])
            np.testing.assert_array_equal(changed[col].to_numpy()[: cut + 1],
                                          full[col].to_numpy()[: cut + 1])


def test_no_label_across_a_gap_or_past_the_end() -> None:
    frame = ticks(4, gap_at=300)
    labels = compute_labels(frame, SMALL)
    ts = frame["ts"].to_numpy()
    seg_end = frame.groupby("segment_id")["ts"].transform("max").to_numpy()
    seg_start = frame.groupby("segment_id")["ts"].transform("min").to_numpy()
    has = labels["has_label"].to_numpy()
    assert not has[ts + SMALL.horizon_s > seg_end].any()  # future window cut by gap / end
    assert not has[ts - SMALL.window_s < seg_start].any()  # past window cut by gap / start
    assert has[(ts + SMALL.horizon_s <= seg_end) & (ts - seg_start > SMALL.lookback_s + 1)].all()


def test_no_label_before_enough_history() -> None:
    frame = ticks(5, gap_at=None)
    cfg = LabelConfig(horizon_s=10.0, window_s=10.0, lookback_s=60.0, min_samples=5)
    labels = compute_labels(frame, cfg)
    first = frame["ts"].iloc[0]
    early = frame["ts"] < first + cfg.window_s + cfg.history_s
    assert not labels.loc[early, "has_label"].any()
    assert labels.loc[~early, "has_label"].any()
    assert (labels.loc[labels["has_label"], "history_s"] >= cfg.history_s).all()


def test_flat_market_is_never_a_spike() -> None:
    frame = ticks(6, gap_at=None)
    frame["price"] = 100.0
    labels = compute_labels(frame, SMALL)
    assert labels["has_label"].any()
    assert (labels.loc[labels["has_label"], "spike"] == 0.0).all()


def test_config_validation_and_label_end() -> None:
    with pytest.raises(ValueError):
        LabelConfig(quantile=1.0)
    with pytest.raises(ValueError):
        LabelConfig(horizon_s=0)
    with pytest.raises(ValueError):
        LabelConfig(lookback_s=60, min_history_s=120)
    assert LabelConfig().history_s == 1740.0
    assert LabelConfig().to_dict()["min_history_s"] == 1740.0
    np.testing.assert_array_equal(label_end(np.array([1.0, 2.0])), [61.0, 62.0])
    with pytest.raises(ValueError, match="lacks"):
        compute_labels(pd.DataFrame({"ts": [1.0]}))
    with pytest.raises(ValueError, match="time order"):
        compute_labels(pd.DataFrame({"ts": [2.0, 1.0], "price": [1.0, 1.0],
                                     "segment_id": [0, 0]}))
    assert compute_labels(pd.DataFrame({"ts": [], "price": [], "segment_id": []})).empty


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.5, 0.95))
def test_spike_iff_forward_volatility_reaches_tau(seed: int, q: float) -> None:
    cfg = LabelConfig(horizon_s=5.0, window_s=5.0, lookback_s=40.0, quantile=q, min_samples=3)
    labels = compute_labels(ticks(seed, n=250, gap_at=120), cfg)
    has = labels["has_label"]
    expected = (labels.loc[has, "rv_fwd"] >= labels.loc[has, "tau"]) & (
        labels.loc[has, "rv_fwd"] > 0)
    assert (labels.loc[has, "spike"] == expected.astype(float)).all()
    assert labels.loc[~has, "spike"].isna().all()


# --- the incremental labeller: the one implementation, against the table oracle ------

ORACLE_CONFIGS = [
    LabelConfig(),
    LabelConfig(min_history_s=300.0, min_samples=100),  # training's row policy
    LabelConfig(horizon_s=30.0, window_s=30.0, lookback_s=600.0, quantile=0.8, min_samples=50),
]


@pytest.fixture(scope="module")
def bundled_frame(recordings_dir) -> pd.DataFrame:
    from cryptovol.core.features import features_frame
    from cryptovol.runtime.recordings import open_recordings, read_ticks

    return features_frame(read_ticks(open_recordings([recordings_dir])))


@pytest.mark.parametrize("cfg", ORACLE_CONFIGS, ids=["default", "training", "short"])
def test_equal_to_the_table_oracle_on_every_bundled_tick(bundled_frame, cfg) -> None:
    got = compute_labels(bundled_frame, cfg)
    want = reference_labels(bundled_frame, cfg)
    assert got["has_label"].sum() > 10_000
    for col in LABEL_COLUMNS:  # bit for bit, NaN where NaN
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equal_to_the_table_oracle_on_generated_ticks(seed: int) -> None:
    frame = ticks(seed, products=3)
    for cfg in (SMALL, LabelConfig(horizon_s=3.0, window_s=7.0, lookback_s=30.0,
                                   min_history_s=5.0, min_samples=2)):
        got, want = compute_labels(frame, cfg), reference_labels(frame, cfg)
        for col in LABEL_COLUMNS:
            np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(),
                                          err_msg=col)


def test_a_label_is_final_once_the_first_tick_past_its_horizon_arrives() -> None:
    frame = ticks(7, gap_at=None)
    labeller = Labeller(SMALL)
    ts = frame["ts"].to_numpy()
    done: dict[int, float] = {}
    for i, (t, p) in enumerate(zip(ts, frame["price"], strict=True)):
        for label in labeller.add(i, "P0", float(t), float(p)):
            assert t > label.ts + SMALL.horizon_s  # never before its horizon has passed
            # the tick before this one was still inside it: final at the first moment
            assert ts[i - 1] <= label.ts + SMALL.horizon_s
            done[label.key] = t
    assert sorted(done) == list(range(len(done)))  # oldest first, none skipped
    assert labeller.pending() == len(frame) - len(done) > 0
    rest = labeller.close()
    assert [lab.key for lab in rest] == list(range(len(done), len(frame)))
    assert not any(lab.has_label for lab in rest if lab.ts + SMALL.horizon_s > ts[-1])
    assert labeller.pending() == 0


def test_reasons_for_no_label() -> None:
    frame = ticks(8, gap_at=300)
    labeller = Labeller(SMALL)
    labels = []
    for i, row in enumerate(frame.itertuples()):
        labels += labeller.add(i, "P0", row.ts, row.price, row.segment_id)
    labels += labeller.close()
    by_key = sorted(labels, key=lambda lab: lab.key)
    want = compute_labels(frame, SMALL)
    assert [lab.has_label for lab in by_key] == want["has_label"].tolist()
    reasons = {lab.reason for lab in by_key if not lab.has_label}
    assert reasons == {NO_PAST, NO_HISTORY, CUT}
    for lab in by_key:
        assert (lab.reason == "") == lab.has_label
        if lab.reason == NO_PAST:
            assert math.isnan(lab.rv_past)
        if lab.reason == CUT:  # the future window runs into the gap or the end
            assert math.isnan(lab.rv_fwd) and not math.isnan(lab.tau)


def test_a_backwards_clock_jump_cuts_the_open_rows_and_forgets_tau() -> None:
    cfg = LabelConfig(horizon_s=2.0, window_s=2.0, lookback_s=10.0, min_samples=2)
    labeller = Labeller(cfg)
    out = []
    for k in range(30):
        out += labeller.add(k, "X", 100.0 + k * 0.5, 100.0 * (1.001 if k % 2 else 1.0))
    assert any(lab.has_label for lab in out)
    jumped = labeller.add("j", "X", 50.0, 100.0)  # 65 s back in time
    # the open rows end with their segment: complete up to the last tick, cut after it
    assert jumped and all(lab.has_label == (lab.ts + cfg.horizon_s <= 114.5) for lab in jumped)
    assert {lab.reason for lab in jumped} == {"", CUT}
    after = []
    for k in range(1, 30):
        after += labeller.add(f"a{k}", "X", 50.0 + k * 0.5, 100.0 * (1.001 if k % 2 else 1.0))
    assert not any(lab.has_label for lab in after if lab.ts - 50.0 < cfg.history_s)


def test_products_are_labelled_apart() -> None:
    frame = ticks(9, products=2)
    both = compute_labels(frame, SMALL)
    for _product, rows in frame.groupby("product_id"):
        alone = compute_labels(rows, SMALL)
        pd.testing.assert_frame_equal(alone, both.loc[rows.index])
    assert LabelConfig.from_dict({**SMALL.to_dict(), "extra": 1}) == LabelConfig(
        horizon_s=10.0, window_s=10.0, lookback_s=60.0, quantile=0.8, min_samples=5,
        min_history_s=50.0)
    assert SMALL.memory_s == 70.0
