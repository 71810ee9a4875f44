"""Time-ordered walk-forward splits with purging and an embargo.

The labelled rows are cut, in time order, into ``n_blocks`` blocks of equal
row count. Fold ``k`` tests on block ``k`` and learns only from rows before it
(an expanding window): the last ``valid_fraction`` of those rows is
the validation slice (decision thresholds are chosen there), the rest is the
fitting slice.

Purge and embargo: a row's label depends on data up to ``t + horizon``. A row
may sit in an earlier slice only if its label window ends at least
``embargo_s`` before the next slice starts::

    t + horizon <= next_slice_start - embargo_s

so no training label sees a validation or test tick, and no validation label a
test tick. Rows of later blocks are never used by fold ``k``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SplitConfig:
    n_blocks: int = 6
    min_train_blocks: int = 2
    valid_fraction: float = 0.25
    embargo_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_train_blocks < self.n_blocks:
            raise ValueError("need 1 <= min_train_blocks < n_blocks")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError("valid_fraction must be in (0, 1)")
        if self.embargo_s < 0:
            raise ValueError("embargo_s must be >= 0")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Fold:
    """Row positions (into the labelled frame) of one walk-forward fold."""

    index: int
    fit: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    test_start: float
    test_end: float

    def describe(self, ts: np.ndarray) -> dict[str, float | int]:
        def span(rows: np.ndarray) -> tuple[float, float]:
            return (float(ts[rows].min()), float(ts[rows].max())) if len(rows) else (np.nan,) * 2

        fit_start, fit_end = span(self.fit)
        valid_start, valid_end = span(self.valid)
        return {"fold": self.index, "n_fit": len(self.fit), "n_valid": len(self.valid),
                "n_test": len(self.test), "fit_start": fit_start, "fit_end": fit_end,
                "valid_start": valid_start, "valid_end": valid_end,
                "test_start": self.test_start, "test_end": self.test_end}


def purge_before(
    candidates: np.ndarray, ts: np.ndarray, boundary: float, horizon_s: float, embargo_s: float
) -> np.ndarray:
    """The candidates whose label window ends at least ``embargo_s`` before ``boundary``."""
    return candidates[ts[candidates] + horizon_s <= boundary - embargo_s]


def block_edges(ts: np.ndarray, n_blocks: int) -> list[int]:
    """Start positions of ``n_blocks`` equal-count blocks of time-sorted ``ts``,
    moved forward past ties so a timestamp never straddles two blocks."""
    n = len(ts)
    edges = [0]
    for k in range(1, n_blocks):
        pos = int(np.searchsorted(ts, ts[min(k * n // n_blocks, n - 1)], side="left"))
        edges.append(max(pos, edges[-1]))
    edges.append(n)
    return edges


def split_fit_valid(
    past: np.ndarray, ts: np.ndarray, valid_fraction: float, horizon_s: float, embargo_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split time-ordered positions into a fitting slice and the validation slice
    that follows it (the last ``valid_fraction`` of the rows), purged. Counting
    rows rather than seconds keeps the slice meaningful across long recording gaps."""
    if len(past) < 2:
        return past[:0], past
    cut = min(max(round(len(past) * (1.0 - valid_fraction)), 1), len(past) - 1)
    valid_start = ts[past[cut]]
    valid = past[ts[past] >= valid_start]
    fit = purge_before(past[ts[past] < valid_start], ts, valid_start, horizon_s, embargo_s)
    return fit, valid


def walk_forward(ts: np.ndarray, cfg: SplitConfig, horizon_s: float) -> list[Fold]:
    """Folds over labelled rows with time-sorted ``ts`` (epoch seconds)."""
    ts = np.asarray(ts, dtype=np.float64)
    if np.any(np.diff(ts) < 0):
        raise ValueError("rows must be sorted by time")
    edges = block_edges(ts, cfg.n_blocks)
    positions = np.arange(len(ts))
    folds: list[Fold] = []
    for k in range(cfg.min_train_blocks, cfg.n_blocks):
        lo, hi = edges[k], edges[k + 1]
        if hi <= lo:
            continue
        test = positions[lo:hi]
        test_start = float(ts[lo])
        past = purge_before(positions[:lo], ts, test_start, horizon_s, cfg.embargo_s)
        fit, valid = split_fit_valid(past, ts, cfg.valid_fraction, horizon_s, cfg.embargo_s)
        folds.append(Fold(len(folds), fit, valid, test, test_start, float(ts[hi - 1])))
    return folds


def final_split(
    ts: np.ndarray, cfg: SplitConfig, horizon_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fitting and validation slices over all labelled rows, for the served model."""
    return split_fit_valid(np.arange(len(ts)), np.asarray(ts, dtype=np.float64),
                           cfg.valid_fraction, horizon_s, cfg.embargo_s)
