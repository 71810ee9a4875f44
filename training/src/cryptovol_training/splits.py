"""Time-ordered walk-forward splits with purging and an embargo.

Two sets of rows take part: the *evaluation* rows (the label exactly as
defined, past warm-up: what the service scores) and the *training* rows (every
row with a causal label, see ``cryptovol_training.dataset``), both in time
order. The evaluation rows are cut into ``n_blocks`` blocks of equal row count.
Fold ``k`` tests on block ``k`` and learns only from the training rows before
it (an expanding window); its decision threshold is chosen on those rows too
(out of fold, see ``cryptovol_training.candidates``).

Purge and embargo: a row's label depends on data up to ``t + horizon``. A row
may sit in an earlier slice only if its label window ends at least
``embargo_s`` before the next slice starts::

    t + horizon <= next_slice_start - embargo_s

so no training label sees a test tick. Rows of later blocks are never used by
fold ``k``.

The locked final test: before anything is chosen, the most recent
``FinalTestConfig.fraction`` of the recorded time (tick time inside gap-free
segments, gaps not counted) is set aside, starting at the start of a segment
(:func:`final_test_start`, computed from tick times alone, never from labels).
Walk-forward, model choice and thresholds see only the rows before it, purged
like any other slice; the final test is scored once, at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SplitConfig:
    n_blocks: int = 6
    min_train_blocks: int = 2
    embargo_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_train_blocks < self.n_blocks:
            raise ValueError("need 1 <= min_train_blocks < n_blocks")
        if self.embargo_s < 0:
            raise ValueError("embargo_s must be >= 0")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class FinalTestConfig:
    """The most recent ``fraction`` of recorded time, locked away (0 disables it)."""

    fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError("final test fraction must be in [0, 1)")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def final_test_start(ts: np.ndarray, segments: np.ndarray, fraction: float) -> float | None:
    """The start of the locked final test: the latest segment start such that the
    recorded time from it to the end is at least ``fraction`` of all recorded
    time. ``segments`` labels each tick's gap-free segment (any hashable, e.g.
    product and segment id); None when ``fraction`` is 0 or nothing is recorded."""
    ts = np.asarray(ts, dtype=np.float64)
    if fraction <= 0 or len(ts) == 0:
        return None
    spans: dict[Any, list[float]] = {}
    for key, t in zip(segments.tolist(), ts.tolist(), strict=True):
        span = spans.setdefault(key, [t, t])
        span[0], span[1] = min(span[0], t), max(span[1], t)
    starts = np.array([lo for lo, _ in spans.values()])
    lengths = np.array([hi - lo for lo, hi in spans.values()])
    total = lengths.sum()
    if total <= 0:
        return None
    order = np.argsort(starts, kind="stable")[::-1]  # latest first
    after = np.cumsum(lengths[order])  # recorded time from each start to the end
    reached = np.flatnonzero(after >= fraction * total)
    return float(starts[order[reached[0]]]) if len(reached) else float(starts.min())


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: ``fit`` indexes the training rows, ``test`` the
    evaluation rows."""

    index: int
    fit: np.ndarray
    test: np.ndarray
    test_start: float
    test_end: float

    def describe(self, ts_eval: np.ndarray, ts_train: np.ndarray) -> dict[str, float | int]:
        rows = self.fit
        fit_start, fit_end = ((float(ts_train[rows].min()), float(ts_train[rows].max()))
                              if len(rows) else (np.nan, np.nan))
        return {"fold": self.index, "n_fit": len(self.fit), "n_test": len(self.test),
                "fit_start": fit_start, "fit_end": fit_end,
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


def _sorted(ts: np.ndarray) -> np.ndarray:
    ts = np.asarray(ts, dtype=np.float64)
    if np.any(np.diff(ts) < 0):
        raise ValueError("rows must be sorted by time")
    return ts


def walk_forward(
    ts_eval: np.ndarray, cfg: SplitConfig, horizon_s: float, ts_train: np.ndarray | None = None
) -> list[Fold]:
    """Folds over time-sorted evaluation rows ``ts_eval`` (epoch seconds).

    ``ts_train`` (time-sorted) are the rows models may learn from, which can be
    a superset of the evaluation rows (default: the same rows). ``fit`` indexes
    ``ts_train``; ``test`` indexes ``ts_eval``."""
    ts_eval = _sorted(ts_eval)
    ts_train = ts_eval if ts_train is None else _sorted(ts_train)
    edges = block_edges(ts_eval, cfg.n_blocks)
    positions = np.arange(len(ts_eval))
    everything = np.arange(len(ts_train))
    folds: list[Fold] = []
    for k in range(cfg.min_train_blocks, cfg.n_blocks):
        lo, hi = edges[k], edges[k + 1]
        if hi <= lo:
            continue
        test_start = float(ts_eval[lo])
        fit = purge_before(everything, ts_train, test_start, horizon_s, cfg.embargo_s)
        folds.append(Fold(len(folds), fit, positions[lo:hi], test_start, float(ts_eval[hi - 1])))
    return folds
