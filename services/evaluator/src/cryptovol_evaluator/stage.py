"""The evaluator's step on the stream worker: ticks.raw + predictions.log ->
graded predictions on predictions.labelled, live quality in the metrics.

State is per partition number (a :class:`~cryptovol_evaluator.grading.Grader`).
A partition gained (at start-up, in a rebalance, after a failed produce) is
rebuilt from history before its first batch:

- ``ticks.raw``: the ticks from the label's memory (``tau``'s 30-minute
  lookback plus its past window, the horizon of the rows still open and the
  gap rules' slack) before the first tick still to process, through a fresh
  gate and labeller: the labels are those of an uninterrupted run;
- ``predictions.log``: first ``predictions.labelled`` of the same partition
  over the longest quality window (what was graded: never again, and the
  rows of the quality windows), then the predictions of ``retention_s`` before
  the first one still to process (those not graded wait again for their
  label).

So a restart, a crash or a rebalance grades every prediction once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from kafka.structs import TopicPartition
from pydantic import ValidationError

from cryptovol.core.codec import DecodeError, decode_tick, encode_record
from cryptovol.core.schemas import LabelledPrediction, PredictionRecord
from cryptovol.core.timestamps import now_micros, parse_micros, to_micros
from cryptovol.runtime.history import History
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.worker import Batch, Output, Record, Stage, decoded
from cryptovol_evaluator import metrics
from cryptovol_evaluator.grading import DUPLICATE, LABELLED, Graded, Grader, GradingConfig
from cryptovol_evaluator.quality import Quality, Windows, message_of, row_of_message, scores_of

log = get_logger(__name__)


def decode_prediction(raw: bytes | None) -> PredictionRecord:
    if not raw:
        raise DecodeError("empty message")
    try:
        return PredictionRecord.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise DecodeError(f"invalid prediction: {where}: {first['msg']}") from exc


def _time_of(record: Record) -> int | None:
    """Event time of a record of any of the three topics (None if unreadable)."""
    try:
        return parse_micros(orjson.loads(record.value)["event_time"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class _End(NamedTuple):
    offset: int
    timestamp: int
    value: bytes


@dataclass
class Tally:
    graded: list[tuple[int, Graded, LabelledPrediction]] = field(default_factory=list)
    ticks: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    let_go: int = 0


class Evaluate(Stage):
    def __init__(
        self,
        config: GradingConfig,
        windows: Windows,
        *,
        topic_ticks: str,
        topic_predictions: str,
        topic_labelled: str,
        refresh_s: float = 10.0,
        rebuild_margin_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_us: Callable[[], int] = now_micros,
    ) -> None:
        self.config = config
        self.windows = windows
        self.topic_ticks = topic_ticks
        self.topic_predictions = topic_predictions
        self.topic_labelled = topic_labelled
        self.refresh_s = refresh_s
        feat = config.features
        self.margin_s = rebuild_margin_s
        self.tick_lookback_s = (config.label.memory_s + config.label.horizon_s
                                + 2 * feat.gap_s + feat.grace_s + rebuild_margin_s)
        self.prediction_lookback_s = config.retention_s + config.label.horizon_s \
            + config.expiry_s + rebuild_margin_s
        self.labelled_lookback_s = max(config.memory_s, max(w.seconds for w in windows.windows)) \
            + rebuild_margin_s
        self._clock = clock
        self._wall_us = wall_us
        self.graders: dict[int, Grader] = {}
        self._ready: list[tuple[int, Graded]] = []  # graded while restoring
        self.quality: list[Quality] = []
        self.graded = 0
        self.newest_graded_us = 0
        # the windows are shared with the refresher thread (quality is recomputed
        # on a timer, so the last rows of a burst are published too)
        self._lock = threading.Lock()
        self._tails: dict[int, int | None] = {}  # newest graded event time per partition
        self._restored: set[TopicPartition] = set()
        self._dirty = False

    def grader(self, partition: int) -> Grader:
        g = self.graders.get(partition)
        if g is None:
            g = self.graders[partition] = Grader(self.config)
        return g

    # -- the step ---------------------------------------------------------------
    def process(self, batch: Batch) -> Output:
        ready, self._ready = self._ready, []
        dead: list[tuple[Record, str]] = []
        tally = Tally()
        for tp, records in batch.items():
            p = tp.partition
            grader = self.grader(p)
            if tp.topic == self.topic_ticks:
                for tick in decoded(records, decode_tick, dead):
                    graded = grader.tick(tick)
                    tally.ticks[grader.last_outcome] += 1
                    if graded:
                        ready.extend((p, g) for g in graded)
            else:
                for prediction in decoded(records, decode_prediction, dead):
                    graded = grader.prediction(prediction)
                    if graded is None:
                        tally.outcomes[DUPLICATE] += 1
                    elif graded:
                        ready.extend((p, g) for g in graded)
        for record, _reason in dead:
            tally.dead[record.topic] += 1
        tally.let_go = sum(g.take_let_go() for g in self.graders.values())
        produce: list[tuple[str, bytes | None, bytes]] = []
        now, topic = self._wall_us(), self.topic_labelled
        for p, graded in ready:
            message = message_of(graded, now, scores_of(graded))
            produce.append((topic, graded.prediction.product_id.encode(), encode_record(message)))
            tally.graded.append((p, graded, message))
            tally.outcomes[graded.reason or LABELLED] += 1
        return Output(produce=produce, dead=dead, items=[m for _, _, m in tally.graded],
                      tally=tally)

    def settled(self, output: Output) -> None:
        tally: Tally = output.tally
        now = self._wall_us()
        newest = 0
        by_partition: dict[int, list] = {}
        for p, graded, message in tally.graded:
            by_partition.setdefault(p, []).append(row_of_message(message))
            metrics.DELAY.observe(max(0.0, (now - graded.event_us) / 1e6))
            newest = max(newest, graded.event_us)
        with self._lock:
            for p, rows in by_partition.items():
                if p in self.graders:  # else: given away meanwhile
                    self.windows.add(p, rows)
            self._dirty = True
        for outcome, n in tally.outcomes.items():
            metrics.PREDICTIONS.labels(outcome).inc(n)
        for outcome, n in tally.ticks.items():
            metrics.TICKS.labels(outcome).inc(n)
        for topic, n in tally.dead.items():
            metrics.DEAD_LETTERED.labels(topic).inc(n)
        if tally.let_go:
            metrics.LABELS_LET_GO.inc(tally.let_go)
        if newest:
            self.newest_graded_us = max(self.newest_graded_us, newest)
            metrics.LAST_GRADED.set(self.newest_graded_us / 1e6)
            metrics.LAST_GRADED_AT.set(now / 1e6)
        self.graded += len(tally.graded)
        metrics.PENDING.set(sum(len(g.pending) for g in list(self.graders.values())))
        metrics.WAITING.set(sum(len(g.waiting) for g in list(self.graders.values())))

    def refresh(self) -> None:
        """Recompute the quality windows and publish them (when rows changed)."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            self.quality = self.windows.compute()
            metrics.publish(self.quality)

    def run_refresher(self, stop: threading.Event) -> threading.Thread:
        """Refresh every ``refresh_s`` until ``stop`` is set (a daemon thread)."""
        def loop() -> None:
            while not stop.wait(self.refresh_s):
                try:
                    self.refresh()
                except Exception:  # never let the metrics kill the stage
                    log.exception("quality refresh failed")

        thread = threading.Thread(target=loop, name="quality-refresh", daemon=True)
        thread.start()
        return thread

    # -- state ------------------------------------------------------------------
    def restore(self, tp: TopicPartition, records: Sequence[Record], history: History) -> bool:
        """Rebuild partition ``tp.partition``: this topic's side from before ``records``,
        and the other topic's side too if it is not restored yet, up to that topic's
        end (a crash may leave one topic wholly committed, so no record of it would
        ever ask for a restore; what it re-delivers later is recognised as seen)."""
        if tp in self._restored:
            return True
        first = next((r for r in records if _time_of(r) is not None), None)
        if first is None:
            return False  # nothing usable yet: the next batch tells where to start
        self._restore_side(tp, first, history)
        other = TopicPartition(self.topic_predictions if tp.topic == self.topic_ticks
                               else self.topic_ticks, tp.partition)
        if other not in self._restored:
            last = self._last_record(other, history)
            if last is not None:
                self._restore_side(other, last, history)
            self._restored.add(other)
        return True

    def _restore_side(self, tp: TopicPartition, first: Record, history: History) -> None:
        started = self._clock()
        grader = self.grader(tp.partition)
        first_us = _time_of(first)
        assert first_us is not None
        if tp.topic == self.topic_ticks:
            fed = self._replay_ticks(tp, first, first_us, history, grader)
        else:
            fed = self._restore_predictions(tp, first, first_us, history, grader)
        self._restored.add(tp)
        elapsed = self._clock() - started
        metrics.STATE_REBUILD.labels(tp.topic).observe(elapsed)
        log.info("partition state rebuilt", extra={
            "topic": tp.topic, "partition": tp.partition, "to_offset": first.offset,
            "records": fed, "seconds": round(elapsed, 3)})

    @staticmethod
    def _last_record(tp: TopicPartition, history: History) -> Record | None:
        """A stand-in for the record after ``tp``'s last (offset = the end), with the
        last record's time: what a restore reads up to. None for an empty partition."""
        reader = history.reader
        beginning = reader.beginning_offsets([tp])[tp]
        end = reader.end_offsets([tp])[tp]
        if end <= beginning:
            return None
        last = next(iter(history.records(tp, end - 1, end)))
        return _End(end, last.timestamp, last.value)

    def _graded_through(self, p: int, history: History) -> int | None:
        """The newest event time graded in partition ``p`` (``predictions.labelled``'s
        tail), None when nothing was: every prediction older than it by more than
        the horizon and the expiry that had arrived before a restart was graded."""
        if p not in self._tails:
            tp = TopicPartition(self.topic_labelled, p)
            reader = history.reader
            beginning = reader.beginning_offsets([tp])[tp]
            end = reader.end_offsets([tp])[tp]
            times = [t for r in history.records(tp, max(beginning, end - 1000), end)
                     if (t := _time_of(r)) is not None] if end > beginning else []
            self._tails[p] = max(times) if times else None
        return self._tails[p]

    def _anchor_us(self, p: int, history: History) -> int | None:
        """Where ungraded predictions may begin (None: anywhere)."""
        newest = self._graded_through(p, history)
        if newest is None:
            return None
        label = self.config.label
        return newest - round((label.horizon_s + self.config.expiry_s + self.margin_s) * 1e6)

    def _start(self, tp: TopicPartition, first: Record, target_us: int | None,
               history: History, first_us: int) -> int:
        if target_us is None:
            return history.reader.beginning_offsets([tp])[tp]
        lookback = max(0.0, (first_us - target_us) / 1e6)
        return history.start_offset(tp, first, target_us, lookback, _time_of)

    def _replay_ticks(self, tp: TopicPartition, first: Record, first_us: int, history: History,
                      grader: Grader) -> int:
        """The ticks from the label's memory before the oldest row whose label
        may still be needed: the first tick to process, or the oldest prediction
        that may be ungraded. Labels of rows nearer the replay's start than the
        memory are not those of an uninterrupted run: ignored (their predictions
        were graded)."""
        anchor = self._anchor_us(tp.partition, history)
        since = first_us if anchor is None else min(first_us, anchor)
        target = since - round(self.tick_lookback_s * 1e6)
        start = self._start(tp, first, target if anchor is not None else None, history, first_us)
        grader.ignore_before_us = target + round(self.config.label.memory_s * 1e6)
        fed = 0
        try:
            for record in history.records(tp, start, first.offset):
                try:
                    tick = decode_tick(record.value)
                except DecodeError:
                    continue
                self._ready.extend((tp.partition, g) for g in grader.tick(tick))
                fed += 1
        finally:
            grader.ignore_before_us = None
        return fed

    def _restore_predictions(self, tp: TopicPartition, first: Record, first_us: int,
                             history: History, grader: Grader) -> int:
        """What was graded (the ids, never again, and the quality windows' rows),
        then the predictions that may be ungraded, held again."""
        p = tp.partition
        newest = self._graded_through(p, history)
        rows = []
        if newest is not None:
            labelled = TopicPartition(self.topic_labelled, p)
            since = newest - round(self.labelled_lookback_s * 1e6)
            reader = history.reader
            end = reader.end_offsets([labelled])[labelled]
            last = next(iter(history.records(labelled, end - 1, end)))
            start = history.start_offset(labelled, last, since, self.labelled_lookback_s,
                                         _time_of)
            for record in history.records(labelled, start, end):
                try:
                    message = LabelledPrediction.model_validate_json(record.value)
                except ValidationError:
                    continue
                grader.remember(message.record_id, to_micros(message.event_time))
                rows.append(row_of_message(message))
        with self._lock:
            self.windows.drop(p)
            self.windows.add(p, rows)
            self._dirty = True
        anchor = self._anchor_us(p, history)
        target = None if anchor is None else min(
            anchor, first_us - round(self.prediction_lookback_s * 1e6))
        start = self._start(tp, first, target, history, first_us)
        fed = 0
        for record in history.records(tp, start, first.offset):
            try:
                prediction = decode_prediction(record.value)
            except DecodeError:
                continue
            self._ready.extend((p, g) for g in grader.restored(prediction))
            fed += 1
        return fed + len(rows)

    def drop(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            self._tails.pop(tp.partition, None)
            self._restored.discard(tp)
            grader = self.graders.get(tp.partition)
            if grader is None:
                continue
            if tp.topic == self.topic_ticks:
                grader.drop_ticks()
            else:
                grader.drop_predictions()
                with self._lock:
                    self.windows.drop(tp.partition)
                    self._dirty = True
            if grader.empty():
                del self.graders[tp.partition]

    def health(self) -> tuple[bool, dict[str, Any]]:
        held = Counter[str]()
        for g in list(self.graders.values()):
            held.update(g.health())
        return True, {"graded": self.graded, **held, "window_rows": len(self.windows)}
