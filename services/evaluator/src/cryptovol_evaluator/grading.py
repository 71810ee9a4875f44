"""Joining predictions with their realized labels (pure, no I/O).

One :class:`Grader` per partition number: ``ticks.raw`` and ``predictions.log``
are both keyed by product, so a product's ticks and predictions share a
partition number (the topics have the same partition count) and one consumer
holds both.

- Ticks pass the features engine's own acceptance rules
  (:class:`~cryptovol.core.features.gate.TickGate`: duplicates, late ticks,
  out-of-order clamping, gaps) and feed a
  :class:`~cryptovol.core.labels.Labeller`, the code training labels with; it
  hands back each tick's label once its horizon has passed.
- A label and its prediction meet by ``record_id``, whichever comes first:
  a prediction waits in ``pending`` for its label, a label waits in ``waiting``
  for its prediction.
- Explicitly handled, and counted: a prediction already graded or already
  waiting (``duplicate``: at-least-once delivery, a replay after a restart);
  a prediction the tick stream has passed by ``expiry_s`` beyond its horizon
  without a label for it (``no_tick``: its tick never arrived, or arrived so
  much earlier that its label was let go); a label whose prediction has not
  come while predictions ``retention_s`` newer have (let go: the row was
  never predicted, e.g. a warm-up row).

Every prediction is graded exactly once: with its label, or unlabelled with
the reason (``cut``, ``no_history``, ``no_past``, ``no_tick``). ``graded``
remembers the ids graded in the last ``memory_s`` of prediction time, which a
restart restores from ``predictions.labelled``, so a replayed prediction is
never graded twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptovol.core.features import FeatureConfig
from cryptovol.core.features.gate import DROPPED, TickGate
from cryptovol.core.labels import Label, LabelConfig, Labeller
from cryptovol.core.schemas import PredictionRecord
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import to_micros

NO_TICK = "no_tick"
DUPLICATE = "duplicate"
LABELLED = "labelled"


@dataclass(frozen=True)
class GradingConfig:
    label: LabelConfig = field(default_factory=LabelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    expiry_s: float = 120.0  # past its horizon in tick time, a prediction without label: no_tick
    retention_s: float = 600.0  # a label waits this much prediction time for its prediction
    memory_s: float = 3600.0  # graded ids remembered (at least the longest quality window)
    max_waiting: int = 500_000  # labels held at most (oldest let go first)
    max_pending: int = 500_000  # predictions held at most (oldest graded no_tick first)


class Graded(NamedTuple):
    """A prediction with its label (``label`` None: no tick, see ``reason``)."""

    prediction: PredictionRecord
    event_us: int
    label: Label | None
    reason: str  # "" when labelled

    @property
    def has_label(self) -> bool:
        return not self.reason


class _Pending(NamedTuple):
    prediction: PredictionRecord
    event_us: int


class Grader:
    def __init__(self, config: GradingConfig | None = None) -> None:
        self.config = cfg = config or GradingConfig()
        self.gate = TickGate(cfg.features)
        self.labeller = Labeller(cfg.label)
        self.pending: dict[str, _Pending] = {}
        self.waiting: dict[str, Label] = {}
        self.graded: dict[str, int] = {}  # record id -> event time, oldest first
        self.prediction_clock_us = 0
        self.ticks = Counter[str]()  # gate outcomes
        self.outcomes = Counter[str]()  # predictions: labelled, reasons, duplicate
        self.let_go = 0  # labels whose prediction never came
        self.last_outcome = ""  # of the last tick
        self.ignore_before_us: int | None = None  # while replaying: labels of older rows
        self._let_go_taken = 0
        self._horizon_us = round(cfg.label.horizon_s * 1e6)
        self._expiry_us = round(cfg.expiry_s * 1e6)
        self._retention_us = round(cfg.retention_s * 1e6)
        self._memory_us = round(cfg.memory_s * 1e6)

    # -- ticks ------------------------------------------------------------------
    def tick(self, tick: Tick) -> list[Graded]:
        """One tick of ``ticks.raw``: the predictions its labels (and the time
        it moved on) made gradable."""
        gate = self.gate
        outcome = gate.admit(tick.record_id, tick.product_id, tick.event_us, tick.receive_us,
                             tick.price)
        self.ticks[outcome] += 1
        self.last_outcome = outcome
        if outcome in DROPPED:
            return []
        out: list[Graded] = []
        labels = self.labeller.add(tick.record_id, tick.product_id, gate.time_us / 1e6,
                                   tick.price, gate.segment)
        if labels:
            self._labels(labels, out)
        if self.pending:
            self._expire(out)
        return out

    def _labels(self, labels: Iterable[Label], out: list[Graded]) -> None:
        pending, waiting = self.pending, self.waiting
        ignore = self.ignore_before_us
        for label in labels:
            if ignore is not None and label.ts * 1e6 < ignore:
                continue
            key = label.key
            held = pending.pop(key, None)  # type: ignore[call-overload]
            if held is not None:
                out.append(self._grade(held, label))
            elif key not in self.graded:
                waiting[key] = label  # type: ignore[index]
        if len(waiting) > self.config.max_waiting:
            for key in list(waiting)[: len(waiting) - self.config.max_waiting]:
                del waiting[key]
                self.let_go += 1

    def _expire(self, out: list[Graded]) -> None:
        """Predictions the tick stream passed without a label: ``no_tick``."""
        pending, gate, limit = self.pending, self.gate, self._horizon_us + self._expiry_us
        while pending:
            key, held = next(iter(pending.items()))
            clock = gate.last_time_us(held.prediction.product_id)
            waits = clock is None or clock - held.event_us <= limit
            if waits and len(pending) <= self.config.max_pending:
                return
            del pending[key]
            out.append(self._grade(held, None))

    # -- predictions ------------------------------------------------------------
    def prediction(self, record: PredictionRecord) -> list[Graded] | None:
        """One record of ``predictions.log``: graded now if its label is known;
        None for a duplicate (graded or waiting already)."""
        key = record.record_id
        if key in self.graded or key in self.pending:
            self.outcomes[DUPLICATE] += 1
            return None
        event_us = to_micros(record.event_time)
        if event_us > self.prediction_clock_us:
            self.prediction_clock_us = event_us
            self._let_go()
        held = _Pending(record, event_us)
        label = self.waiting.pop(key, None)
        if label is not None:
            return [self._grade(held, label)]
        self.pending[key] = held
        out: list[Graded] = []
        self._expire(out)
        return out

    def _let_go(self) -> None:
        waiting = self.waiting
        edge = (self.prediction_clock_us - self._retention_us) / 1e6
        while waiting:
            key, label = next(iter(waiting.items()))
            if label.ts >= edge:
                break
            del waiting[key]
            self.let_go += 1

    # -- grading ----------------------------------------------------------------
    def _grade(self, held: _Pending, label: Label | None) -> Graded:
        reason = NO_TICK if label is None else label.reason
        self.outcomes[reason or LABELLED] += 1
        self.remember(held.prediction.record_id, held.event_us)
        return Graded(held.prediction, held.event_us, label, reason)

    def remember(self, record_id: str, event_us: int) -> None:
        """``record_id`` is graded (now, or before a restart): never again."""
        graded = self.graded
        graded[record_id] = event_us
        if len(graded) % 1024 == 0:
            edge = self.prediction_clock_us - self._memory_us
            while graded:
                key, at = next(iter(graded.items()))
                if at >= edge:
                    break
                del graded[key]

    def restored(self, record: PredictionRecord) -> list[Graded]:
        """A prediction read back after a restart: held again unless graded (not
        counted as a duplicate: it is the same delivery, read twice)."""
        if record.record_id in self.graded or record.record_id in self.pending:
            return []
        return self.prediction(record) or []

    def take_let_go(self) -> int:
        """Labels let go since the last call."""
        n, self._let_go_taken = self.let_go - self._let_go_taken, self.let_go
        return n

    def drop_ticks(self) -> None:
        """Forget the tick side (its partition of ticks.raw is rebuilt or gone)."""
        self.gate = TickGate(self.config.features)
        self.labeller = Labeller(self.config.label)
        self.waiting.clear()

    def drop_predictions(self) -> None:
        """Forget the prediction side (its partition of predictions.log)."""
        self.pending.clear()
        self.graded.clear()
        self.prediction_clock_us = 0

    def empty(self) -> bool:
        return not (self.pending or self.waiting or self.graded or self.labeller.products())

    def close(self) -> list[Graded]:
        """End of the data (tests, offline): every held prediction graded."""
        out: list[Graded] = []
        self._labels(self.labeller.close(), out)
        for held in list(self.pending.values()):
            out.append(self._grade(held, None))
        self.pending.clear()
        return out

    def health(self) -> dict[str, int]:
        return {"pending": len(self.pending), "waiting_labels": len(self.waiting),
                "remembered": len(self.graded)}
