"""The featurizer's step on the stream worker: ticks.raw -> window state -> ticks.features.

Per batch, each tick is decoded (a malformed one is dead-lettered), fed to the
window state of its partition, and the row it produced becomes a record for
``ticks.features`` (key = product). Window state is kept per partition: a
partition this replica gains (or every partition after a failed produce) is
restored before its first batch by replaying its recent history through a
fresh engine (:meth:`Featurize.restore`), so the rows do not depend on how many
replicas ran or when they restarted (docs/features.md).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition

from cryptovol.core.codec import DecodeError, decode_tick, encode_row
from cryptovol.core.features import FeatureConfig, FeatureEngine, StepResult
from cryptovol.core.features.engine import DUPLICATE, LATE, MALFORMED, OUT_OF_ORDER
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import now_micros
from cryptovol.runtime.history import History
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.worker import Batch, Output, Record, Stage
from cryptovol_featurizer import metrics

log = get_logger(__name__)


class Throttle:
    """Which accepted ticks become rows: every one (``interval_ms = 0``), or the
    first tick of each ``interval_ms`` bucket of event time per product. Depends
    only on the previous accepted tick, so a rebuilt state throttles the same."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_us = interval_ms * 1000
        self._bucket: dict[str, int] = {}

    def emit(self, product_id: str, time_us: int) -> bool:
        if not self.interval_us:
            return True
        bucket = time_us // self.interval_us
        if self._bucket.get(product_id) == bucket:
            return False
        self._bucket[product_id] = bucket
        return True


@dataclass
class PartitionState:
    engine: FeatureEngine
    throttle: Throttle

    def feed(self, tick: Tick) -> StepResult | None:
        res = self.engine.step(tick)
        if res is not None and self.throttle.emit(tick.product_id, res.time_us):
            return res
        return None


@dataclass
class Tally:
    """What one batch did, counted once its rows are acknowledged."""

    consumed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    out_of_order: Counter[str] = field(default_factory=Counter)


def _event_us(record: Record) -> int | None:
    try:
        return decode_tick(record.value).event_us
    except DecodeError:
        return None


class Featurize(Stage):
    def __init__(
        self,
        config: FeatureConfig,
        *,
        topic_out: str,
        emit_interval_ms: int = 0,
        rebuild_margin_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_us: Callable[[], int] = now_micros,
    ) -> None:
        self.config = config
        self.topic_out = topic_out
        self.emit_interval_ms = emit_interval_ms
        self.lookback_s = config.rebuild_lookback_s + rebuild_margin_s
        self._clock = clock
        self._wall_us = wall_us
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self._keys: dict[str, bytes] = {}
        self.consumed = 0
        self.emitted = 0

    def fresh_state(self) -> PartitionState:
        return PartitionState(FeatureEngine(self.config), Throttle(self.emit_interval_ms))

    # -- state ------------------------------------------------------------------
    def restore(self, tp: TopicPartition, records: Sequence[Record], history: History) -> bool:
        """Replay, through a fresh engine and emitting nothing, the partition's
        records from ``lookback_s`` of event time before its first well-formed
        tick still to process."""
        for first in records:
            try:
                tick = decode_tick(first.value)
            except DecodeError:
                continue
            break
        else:
            return False  # nothing usable yet: the next batch tells where to start
        started = self._clock()
        state = self.fresh_state()
        target = tick.event_us - round(self.lookback_s * 1e6)
        start = history.start_offset(tp, first, target, self.lookback_s, _event_us)
        fed = 0
        for record in history.records(tp, start, first.offset):
            try:
                state.feed(decode_tick(record.value))
            except DecodeError:
                continue
            fed += 1
        self.partitions[tp] = state
        elapsed = self._clock() - started
        metrics.STATE_REBUILD.observe(elapsed)
        log.info("window state rebuilt", extra={
            "partition": tp.partition, "from_offset": start, "to_offset": first.offset,
            "ticks": fed, "seconds": round(elapsed, 3)})
        return True

    def drop(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            self.partitions.pop(tp, None)

    # -- the step ---------------------------------------------------------------
    def process(self, batch: Batch) -> Output:
        produce: list[tuple[str, bytes | None, bytes]] = []
        dead: list[tuple[Record, str]] = []
        emitted: list[tuple[Tick, StepResult]] = []
        tally = Tally()
        consumed, dropped, out_of_order = tally.consumed, tally.dropped, tally.out_of_order
        topic, keys = self.topic_out, self._keys
        for tp, records in batch.items():
            state = self.partitions.get(tp)
            if state is None:  # only malformed records so far
                state = self.partitions[tp] = self.fresh_state()
            feed, engine = state.feed, state.engine
            for record in records:
                try:
                    tick = decode_tick(record.value)
                except DecodeError as exc:
                    dead.append((record, str(exc)))
                    dropped[MALFORMED] += 1
                    continue
                product = tick.product_id
                consumed[product] += 1
                res = feed(tick)
                outcome = engine.last_outcome
                if outcome == OUT_OF_ORDER:
                    out_of_order[product] += 1
                elif outcome in (DUPLICATE, LATE):
                    dropped[outcome] += 1
                elif outcome == MALFORMED:
                    dead.append((record, "price is not a positive number"))
                    dropped[MALFORMED] += 1
                if res is not None:
                    key = keys.get(product)
                    if key is None:
                        key = keys[product] = product.encode()
                    produce.append((topic, key, encode_row(tick, res)))
                    emitted.append((tick, res))
        return Output(produce=produce, dead=dead, items=emitted, tally=tally)

    def settled(self, output: Output) -> None:
        tally: Tally = output.tally
        emitted = output.items
        now_us = self._wall_us()
        observe = metrics.PROCESSING_LAG.observe
        for tick, _res in emitted:
            observe(max(0.0, (now_us - tick.event_us) / 1e6))
        for product, n in Counter(tick.product_id for tick, _ in emitted).items():
            metrics.ROWS_EMITTED.labels(product).inc(n)
        for product, n in tally.consumed.items():
            metrics.TICKS_CONSUMED.labels(product).inc(n)
        for reason, n in tally.dropped.items():
            metrics.TICKS_DROPPED.labels(reason).inc(n)
        for product, n in tally.out_of_order.items():
            metrics.OUT_OF_ORDER.labels(product).inc(n)
        self.consumed += sum(tally.consumed.values())
        self.emitted += len(emitted)

    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {
            "products": sorted({p for s in list(self.partitions.values())
                                for p in s.engine.products()}),
            "ticks_consumed": self.consumed,
            "rows_emitted": self.emitted,
        }
