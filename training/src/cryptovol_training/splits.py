"""Time-ordered walk-forward splits with purging and an embargo.

Two sets of rows take part: the *evaluation* rows (the label exactly as
defined, past warm-up: what the service scores) and the *training* rows (every
row with a causal label, see ``cryptovol_training.dataset``), both in time
order. The evaluation rows are cut into ``n_blocks`` blocks of equal row count.
Fold ``k`` tests on block ``k`` and learns only from rows before it (an
expanding window): the last ``valid_fraction`` of the earlier evaluation rows
is the validation slice (decision thresholds are chosen there), and the
training rows before that slice are the fitting slice.

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
    """One walk-forward fold: ``fit`` indexes the training rows, ``valid`` and
    ``test`` the evaluation rows."""

    index: int
    fit: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    test_start: float
    test_end: float

    def describe(self, ts_eval: np.ndarray, ts_train: np.ndarray) -> dict[str, float | int]:
        def span(ts: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
            return (float(ts[rows].min()), float(ts[rows].max())) if len(rows) else (np.nan,) * 2

        fit_start, fit_end = span(ts_train, self.fit)
        valid_start, valid_end = span(ts_eval, self.valid)
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
    past_eval: np.ndarray, ts_eval: np.ndarray, ts_train: np.ndarray, limit: float,
    cfg: SplitConfig, horizon_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The validation slice (the last ``valid_fraction`` of the evaluation rows in
    ``past_eval``; counting rows, not seconds, keeps it meaningful across long
    recording gaps) and the fitting slice before it (training rows, purged
    against the validation start, and never later than ``limit``)."""
    if len(past_eval) == 0:
        empty = np.arange(0)
        return purge_before(np.arange(len(ts_train)), ts_train, limit, horizon_s,
                            cfg.embargo_s), empty
    cut = min(round(len(past_eval) * (1.0 - cfg.valid_fraction)), len(past_eval) - 1)
    valid_start = float(ts_eval[past_eval[cut]])
    valid = past_eval[ts_eval[past_eval] >= valid_start]
    boundary = min(valid_start, limit)
    fit = purge_before(np.arange(len(ts_train)), ts_train, boundary, horizon_s, cfg.embargo_s)
    return fit, valid


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
    ``ts_train``; ``valid`` and ``test`` index ``ts_eval``."""
    ts_eval = _sorted(ts_eval)
    ts_train = ts_eval if ts_train is None else _sorted(ts_train)
    edges = block_edges(ts_eval, cfg.n_blocks)
    positions = np.arange(len(ts_eval))
    folds: list[Fold] = []
    for k in range(cfg.min_train_blocks, cfg.n_blocks):
        lo, hi = edges[k], edges[k + 1]
        if hi <= lo:
            continue
        test_start = float(ts_eval[lo])
        past = purge_before(positions[:lo], ts_eval, test_start, horizon_s, cfg.embargo_s)
        fit, valid = split_fit_valid(past, ts_eval, ts_train, test_start, cfg, horizon_s)
        folds.append(Fold(len(folds), fit, valid, positions[lo:hi], test_start,
                          float(ts_eval[hi - 1])))
    return folds


def final_split(
    ts_eval: np.ndarray, cfg: SplitConfig, horizon_s: float, ts_train: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fitting rows (into ``ts_train``) and the validation slice (into ``ts_eval``,
    the most recent rows) for the served model."""
    ts_eval = _sorted(ts_eval)
    ts_train = ts_eval if ts_train is None else _sorted(ts_train)
    return split_fit_valid(np.arange(len(ts_eval)), ts_eval, ts_train, np.inf, cfg, horizon_s)
