"""Live model quality over rolling windows of graded rows (pure, no I/O).

A graded row carries the scores of every scorer of that row: the served model,
each shadow, and persistence (``RV_60 / tau`` from the label, the yardstick).
A scorer is ``(role, model_variant, model_version)``. Windows are in event
time (the rows' own time, the label's ``t``), ending at the newest graded
row: the last 15 minutes are the last 15 minutes of market that could be
graded, however fast the rows arrive (a replay grades exactly what a live run
would). Metrics come from :func:`cryptovol.core.quality.binary_metrics`, the
code ``cryptovol-train evaluate`` reports with.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cryptovol.core.quality import binary_metrics, calibration_bins
from cryptovol.core.schemas import GradedScore, LabelledPrediction
from cryptovol.core.scoring import PersistenceRule
from cryptovol.core.timestamps import from_micros, to_micros
from cryptovol_evaluator.grading import Graded

PERSISTENCE_THRESHOLD = 0.5
REFERENCE = ("reference", "reference", "persistence")


class Scorer(NamedTuple):
    role: str  # served | shadow | reference
    model_variant: str
    model_version: str


class Score(NamedTuple):
    scorer: Scorer
    score: float
    threshold: float
    flagged: bool


class Row(NamedTuple):
    """What a window keeps of a graded row."""

    event_us: int
    has_label: bool
    spike: bool
    scores: tuple[Score, ...]


def persistence_score(ratio: float) -> float:
    """The persistence rule's score of ``RV_60 / tau`` (``r / (1 + r)``)."""
    return float(PersistenceRule().score(np.array([[ratio]]), [PersistenceRule().feature])[0])


def scores_of(graded: Graded) -> tuple[Score, ...]:
    """The served model's, the shadows' and (labelled rows) persistence's scores."""
    p = graded.prediction
    out = [Score(Scorer("served", p.model_variant, p.model_version), p.score, p.threshold,
                 p.spike)]
    out += [Score(Scorer("shadow", s.model_variant, s.model_version), s.score, s.threshold,
                  s.spike) for s in p.shadows]
    label = graded.label
    if graded.has_label and label is not None and label.persistence == label.persistence:
        score = persistence_score(label.persistence)
        out.append(Score(Scorer(*REFERENCE), score, PERSISTENCE_THRESHOLD,
                         score >= PERSISTENCE_THRESHOLD))
    return tuple(out)


def row_of(graded: Graded) -> Row:
    label = graded.label
    return Row(graded.event_us, graded.has_label, bool(label.spike) if label else False,
               scores_of(graded))


def row_of_message(msg: LabelledPrediction) -> Row:
    """The window row of a ``predictions.labelled`` record (read back after a restart)."""
    return Row(to_micros(msg.event_time), msg.has_label, bool(msg.spike),
               tuple(Score(Scorer(s.role, s.model_variant, s.model_version), s.score,
                           s.threshold, s.flagged) for s in msg.scores))


def _none_if_nan(x: float) -> float | None:
    return None if x != x else float(x)


def message_of(graded: Graded, graded_us: int, scores: Sequence[Score]) -> LabelledPrediction:
    """The ``predictions.labelled`` record of a graded row."""
    p, label = graded.prediction, graded.label
    return LabelledPrediction(
        record_id=p.record_id, product_id=p.product_id, event_time=p.event_time,
        predicted_time=p.predicted_time, graded_time=from_micros(graded_us),
        has_label=graded.has_label, reason=graded.reason,
        spike=bool(label.spike) if graded.has_label and label else None,
        rv_fwd=_none_if_nan(label.rv_fwd) if label else None,
        tau=_none_if_nan(label.tau) if label else None,
        rv_past=_none_if_nan(label.rv_past) if label else None,
        scores=[GradedScore(role=s.scorer.role, model_variant=s.scorer.model_variant,  # type: ignore[arg-type]
                            model_version=s.scorer.model_version, score=s.score,
                            threshold=s.threshold, flagged=s.flagged) for s in scores])


@dataclass(frozen=True)
class Window:
    name: str  # "15m", "1h"
    seconds: float


def parse_windows(spec: str) -> tuple[Window, ...]:
    """``"15m,1h"`` -> windows (units s, m, h, d)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part[-1] not in units or not part[:-1].replace(".", "", 1).isdigit():
            raise ValueError(f"window {part!r}: expected a number and one of s, m, h, d")
        seconds = float(part[:-1]) * units[part[-1]]
        if seconds <= 0:
            raise ValueError(f"window {part!r} must be positive")
        out.append(Window(part, seconds))
    if not out:
        raise ValueError("no quality window")
    return tuple(sorted(out, key=lambda w: w.seconds))


class Quality(NamedTuple):
    """One scorer over one window."""

    scorer: Scorer
    window: str
    rows: int  # graded rows of the scorer
    labelled: int
    coverage: float  # labelled / rows (NaN for the reference: it exists only on labelled rows)
    metrics: dict[str, float]  # binary_metrics over the labelled rows
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray]  # count, mean score, observed


class Windows:
    """Graded rows of the longest window, per partition (so a partition given
    away takes its rows along)."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self.windows = tuple(windows)
        self._longest_us = round(max(w.seconds for w in windows) * 1e6)
        self._rows: dict[int, deque[Row]] = {}

    def add(self, partition: int, rows: Iterable[Row]) -> None:
        self._rows.setdefault(partition, deque()).extend(rows)

    def drop(self, partition: int) -> None:
        self._rows.pop(partition, None)

    def newest_us(self) -> int | None:
        ends = [max(r[-1].event_us, r[0].event_us) for r in self._rows.values() if r]
        return max(ends) if ends else None

    def __len__(self) -> int:
        return sum(map(len, self._rows.values()))

    def _trim(self, newest: int) -> None:
        edge = newest - self._longest_us
        for rows in self._rows.values():
            while rows and rows[0].event_us <= edge:
                rows.popleft()

    def compute(self) -> list[Quality]:
        newest = self.newest_us()
        if newest is None:
            return []
        self._trim(newest)
        out: list[Quality] = []
        for window in self.windows:
            edge = newest - round(window.seconds * 1e6)
            columns: dict[Scorer, tuple[list, list, list, list]] = {}
            totals: Counter[Scorer] = Counter()
            for rows in self._rows.values():
                for row in rows:
                    if row.event_us <= edge:
                        continue
                    for s in row.scores:
                        totals[s.scorer] += 1
                        if row.has_label:
                            col = columns.get(s.scorer)
                            if col is None:
                                col = columns[s.scorer] = ([], [], [], [])
                            col[0].append(row.spike)
                            col[1].append(s.score)
                            col[2].append(s.flagged)
                            col[3].append(s.threshold)
            for scorer, n in totals.items():
                col = columns.get(scorer, ([], [], [], []))
                y = np.asarray(col[0], dtype=np.int64)
                p = np.asarray(col[1], dtype=np.float64)
                threshold = col[3][-1] if col[3] else math.nan
                metrics = binary_metrics(y, p, threshold, np.asarray(col[2], dtype=bool))
                coverage = math.nan if scorer.role == "reference" else len(y) / n
                out.append(Quality(scorer, window.name, n, len(y), coverage, metrics,
                                   calibration_bins(y, p)))
        return out

