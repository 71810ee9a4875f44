"""Feature names, in the order models and the API see them."""

from __future__ import annotations

#: Window lengths in seconds, shortest first; the last one sets the warm-up.
WINDOWS_S: tuple[int, ...] = (30, 60, 300)
LONGEST_WINDOW_S: int = WINDOWS_S[-1]
#: Window of the original clients' ``ret_mean``, ``ret_std`` and ``n``.
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

#: Volatility ratios: (short, long) window pairs.
RATIO_PAIRS: tuple[tuple[int, int], ...] = ((30, 300), (60, 300))

FEATURE_NAMES: tuple[str, ...] = (
    *(f"{name}_{w}s" for name in WINDOWED for w in WINDOWS_S),
    *(f"vol_ratio_{a}_{b}" for a, b in RATIO_PAIRS),
    "dt_prev",
    "ret_mean",
    "ret_std",
    "n",
)
