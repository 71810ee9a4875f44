"""The label as first written: vectorised over a whole table (numpy + pandas'
rolling quantile), for testing the incremental labeller of
:mod:`cryptovol.core.labels` that training and the evaluator run. Same
definition (see that module); nothing shared with it but the config.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryptovol.core.labels import LABEL_COLUMNS, LabelConfig


def _window_sums(ts: np.ndarray, cum: np.ndarray, offset: float, forward: bool) -> np.ndarray:
    """Sum of squared returns over (t, t + offset] (forward) or (t - offset, t]."""
    idx = np.arange(len(ts))
    if forward:
        end = np.searchsorted(ts, ts + offset, side="right") - 1
        return np.maximum(cum[end] - cum[idx], 0.0)
    start = np.searchsorted(ts, ts - offset, side="right") - 1  # last tick at or before t - offset
    before = np.where(start >= 0, cum[np.maximum(start, 0)], 0.0)
    return np.maximum(cum[idx] - before, 0.0)


def _segment_labels(ts: np.ndarray, price: np.ndarray, cfg: LabelConfig) -> dict[str, np.ndarray]:
    """rv_past / rv_fwd and their validity inside one gap-free segment."""
    r = np.zeros(len(ts))
    r[1:] = np.diff(np.log(price))
    cum = np.cumsum(r * r)
    fwd = np.sqrt(_window_sums(ts, cum, cfg.horizon_s, forward=True))
    past = np.sqrt(_window_sums(ts, cum, cfg.window_s, forward=False))
    past_ok = ts - cfg.window_s >= ts[0]
    fwd_ok = ts + cfg.horizon_s <= ts[-1]
    return {"rv_past": np.where(past_ok, past, np.nan), "rv_fwd": np.where(fwd_ok, fwd, np.nan)}


def _product_labels(
    ts: np.ndarray, price: np.ndarray, segments: np.ndarray, cfg: LabelConfig
) -> dict[str, np.ndarray]:
    rv_past = np.full(len(ts), np.nan)
    rv_fwd = np.full(len(ts), np.nan)
    bounds = np.flatnonzero(segments[1:] != segments[:-1]) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(ts)], strict=True):
        part = _segment_labels(ts[lo:hi], price[lo:hi], cfg)
        rv_past[lo:hi] = part["rv_past"]
        rv_fwd[lo:hi] = part["rv_fwd"]

    # tau: rolling quantile of the known rv_past values over (t - lookback, t]
    known = np.flatnonzero(~np.isnan(rv_past))
    tau = np.full(len(ts), np.nan)
    history = np.full(len(ts), np.nan)
    count = np.zeros(len(ts), dtype=np.int64)
    if len(known):
        kts = ts[known]
        series = pd.Series(rv_past[known], index=pd.to_datetime(kts, unit="s"))
        tau[known] = series.rolling(f"{int(cfg.lookback_s * 1e6)}us", closed="right").quantile(
            cfg.quantile
        ).to_numpy()
        first = np.searchsorted(kts, kts - cfg.lookback_s, side="right")
        history[known] = kts - kts[first]
        count[known] = np.arange(len(known)) - first + 1
    enough = (history >= cfg.history_s) & (count >= cfg.min_samples)
    has_label = enough & ~np.isnan(rv_fwd) & ~np.isnan(tau)
    spike = np.where(has_label, ((rv_fwd >= tau) & (rv_fwd > 0)).astype(np.float64), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        persistence = np.where(tau > 0, rv_past / tau, np.where(rv_past > 0, np.inf, 0.0))
    persistence = np.where(np.isnan(rv_past) | np.isnan(tau), np.nan, persistence)
    return {"rv_past": rv_past, "rv_fwd": rv_fwd, "tau": np.where(enough, tau, np.nan),
            "history_s": history, "persistence": np.where(enough, persistence, np.nan),
            "spike": spike, "has_label": has_label}


def reference_labels(frame: pd.DataFrame, config: LabelConfig | None = None) -> pd.DataFrame:
    """Label columns (``LABEL_COLUMNS``) aligned to ``frame``'s index.

    ``frame`` needs ``ts`` (epoch seconds), ``price`` and ``segment_id``, and
    optionally ``product_id``; rows must be in time order within each product.
    ``spike`` is 1.0 / 0.0 where ``has_label`` and NaN elsewhere.
    """
    cfg = config or LabelConfig()
    missing = {"ts", "price", "segment_id"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)}")
    n = len(frame)
    out = {c: np.full(n, np.nan) for c in LABEL_COLUMNS}
    out["has_label"] = np.zeros(n, dtype=bool)
    ts = frame["ts"].to_numpy(dtype=np.float64)
    price = frame["price"].to_numpy(dtype=np.float64)
    segments = frame["segment_id"].to_numpy()
    if "product_id" in frame.columns:
        groups = frame.groupby("product_id", sort=False).indices.values()
    else:
        groups = [np.arange(n)] if n else []
    for pos in groups:
        if np.any(np.diff(ts[pos]) < 0):
            raise ValueError("rows must be in time order within each product")
        for name, values in _product_labels(ts[pos], price[pos], segments[pos], cfg).items():
            out[name][pos] = values
    return pd.DataFrame(out, index=frame.index)
