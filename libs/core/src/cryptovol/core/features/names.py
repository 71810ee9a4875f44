"""Feature names, in the order models and the API see them.

The layout is fixed: three windows (30, 60, 300 s), seven per-window features,
two volatility ratios, the original clients' three fields, and the 30-minute
context of RV_60 (the label's horizon) with the scale-free features built on
it. The engine writes each value at the position named here.
"""

from __future__ import annotations

#: Window lengths in seconds, shortest first; the last one sets the warm-up.
WINDOWS_S: tuple[int, ...] = (30, 60, 300)
LONGEST_WINDOW_S: int = WINDOWS_S[-1]
#: Window of the original clients' ``ret_mean``, ``ret_std`` and ``n``, and of the
#: RV values the 30-minute context holds (the label's RV_60).
RET_WINDOW_S: int = 60

#: Per-window features, each computed for every window in :data:`WINDOWS_S`.
WINDOWED: tuple[str, ...] = (
    "rv",  # realized volatility: sqrt(sum r_i^2)
    "bpv",  # bipower volatility: sqrt(pi/2 * sum |r_i||r_{i-1}|)
    "logret",  # log return over the window
    "parkinson",  # high-low (Parkinson) volatility
    "n",  # ticks in the window
    "spread_bps",  # mean relative spread, bps of mid
    "imbalance",  # mean top-of-book quantity imbalance
)

#: The 30-minute context of RV_60 and the regime-relative features on it.
CONTEXT_FEATURES: tuple[str, ...] = (
    "rv60_q90_30m",  # 90th percentile of RV_60 over 30 min: the label's tau
    "rv60_logmean_30m",  # mean of ln RV_60 over 30 min
    "rv60_logstd_30m",  # standard deviation of ln RV_60 over 30 min
    "rv60_count_30m",  # RV_60 values in the context
    "rel_rv_30s",  # ln(rv_30s * sqrt(2) / tau): the last 30 s against the threshold
    "rel_rv_60s",  # ln(rv_60s / tau)
    "rel_rv_300s",  # ln(rv_300s / sqrt(5) / tau)
    "rv60_z_30m",  # (ln rv_60s - logmean) / logstd
    "q90_excess_30m",  # ln tau - logmean: how far the threshold sits above the typical minute
    "persistence_ratio",  # rv_60s / tau: the persistence baseline as a feature
)

FEATURE_NAMES: tuple[str, ...] = (
    *(f"{name}_{w}s" for name in WINDOWED for w in WINDOWS_S),
    "vol_ratio_30_300",
    "vol_ratio_60_300",
    "dt_prev",
    "ret_mean",
    "ret_std",
    "n",
    *CONTEXT_FEATURES,
)

#: Position of every feature in a row (what the engine writes to).
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
