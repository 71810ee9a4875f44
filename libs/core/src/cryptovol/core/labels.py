"""The volatility-spike label (pure; see docs/model_card.md).

For each tick ``t`` of a product, with ``r_i`` the log return of the trade price
between consecutive ticks of the same segment (a segment never spans a
recording gap):

- ``rv_fwd(t)  = sqrt(sum r_i^2 for ticks in (t, t + horizon])``
- ``rv_past(t) = sqrt(sum r_i^2 for ticks in (t - window, t])``
- ``tau(t)``: the ``quantile`` of ``rv_past`` over the ticks in
  ``(t - lookback, t]``: only values known at time ``t``
- ``spike(t) = rv_fwd(t) >= tau(t)`` (and ``rv_fwd(t) > 0``, so a dead-flat
  market is never a spike)

A row gets a label only if its past window and its future window both lie
inside its segment (a window cut by a gap or by the end of the data gives no
label) and ``tau`` rests on enough history: the oldest ``rv_past`` value in the
lookback window is at least ``min_history_s`` old and there are at least
``min_samples`` of them. Gaps inside the lookback window are allowed (the
quantile just sees fewer values), so a recording split into files a minute
apart still gets labels.

``persistence(t) = rv_past(t) / tau(t)`` is the persistence baseline: the
current minute's volatility, measured in units of the threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

LABEL_COLUMNS = ("rv_past", "rv_fwd", "tau", "history_s", "persistence", "spike", "has_label")


@dataclass(frozen=True)
class LabelConfig:
    horizon_s: float = 60.0
    window_s: float = 60.0
    lookback_s: float = 1800.0
    quantile: float = 0.90
    min_history_s: float | None = None  # default: lookback_s - window_s
    min_samples: int = 300

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError("quantile must be in (0, 1)")
        if min(self.horizon_s, self.window_s, self.lookback_s) <= 0:
            raise ValueError("horizon, window and lookback must be positive")
        if self.history_s > self.lookback_s:
            raise ValueError("min_history_s cannot exceed lookback_s")

    @property
    def history_s(self) -> float:
        if self.min_history_s is None:
            return max(self.lookback_s - self.window_s, 0.0)
        return self.min_history_s

    def to_dict(self) -> dict[str, float | int]:
        out = asdict(self)
        out["min_history_s"] = self.history_s
        return out


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


def compute_labels(frame: pd.DataFrame, config: LabelConfig | None = None) -> pd.DataFrame:
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


def label_end(ts: np.ndarray | pd.Series, config: LabelConfig | None = None) -> np.ndarray:
    """The time each row's label stops depending on data (``t + horizon``): what purging uses."""
    cfg = config or LabelConfig()
    return np.asarray(ts, dtype=np.float64) + cfg.horizon_s
