"""The end-to-end ledger's bookkeeping (pure: records in, a report out).

Every tick that reaches ``ticks.raw`` must end in exactly one of these states,
after de-duplication by ``record_id``:

- **predicted**: a feature row on ``ticks.features`` and a prediction record on
  ``predictions.log`` (or in the consumer's fallback files);
- **warm-up**: a feature row whose windows are not full yet (the consumer does
  not score those unless ``PREDICT_WARMUP``);
- **dropped**: the feature engine's own rules refuse it (``duplicate``,
  ``late``), exactly as the reference engine below does;
- **dead-lettered**: on ``ticks.raw.dlq`` (malformed tick) or
  ``ticks.features.dlq`` (malformed row, or rejected by ``/predict``), with the
  reason from the record's headers;
- **pending**: still in flight (its input is at or after its stage's committed
  consumer-group offset), only when the run is not declared drained;
- **missing**: none of the above. Must be 0.

What each stage should have produced is known independently: the ticks on
``ticks.raw`` (read with the decoders the stages use, :mod:`cryptovol.core.codec`)
are run, in partition order, through :class:`FeatureEngine` (the same engine
training uses), and every feature row is compared bit for bit (NaN-aware) with
the reference row. Copies of a record (at-least-once delivery) must carry the
same content as the first copy.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson

from cryptovol.core.codec import DecodeError, decode_row, decode_tick
from cryptovol.core.features import FEATURE_NAMES, FeatureConfig, FeatureEngine
from cryptovol.core.features.engine import MALFORMED
from cryptovol.core.timestamps import parse_micros, to_micros
from cryptovol.runtime.kafka import DEAD_LETTER_MAX_BYTES

UNKNOWN_PRODUCT = "?"
_PACK = struct.Struct(f"<q?{len(FEATURE_NAMES)}d")
_NAN = math.nan


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record as the ledger sees it."""

    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None  # when the producing stage sent it (Kafka CreateTime)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace") if value is not None else None
        return None


def _row_digest(time_us: int, warmup: bool, values: tuple[float, ...] | list[float]) -> int:
    """A digest of a feature row's content; NaN (or null) in one canonical form."""
    clean = [v if v == v else _NAN for v in values]
    return hash(_PACK.pack(time_us, warmup, *clean))


class _Tick:
    """What the ledger knows about one record id."""

    __slots__ = ("expect", "features", "first_row", "offset", "partition", "predicted",
                 "predicted_us", "prediction", "product", "raw_sent_ms", "receive_us", "ref",
                 "row_conflict", "row_sent_ms", "warmup")

    def __init__(self, product: str, partition: int, offset: int, receive_us: int) -> None:
        self.product = product
        self.partition = partition
        self.offset = offset
        self.receive_us = receive_us
        self.expect = ""  # "row", or the reason no row is due (dropped, dead letter)
        self.ref: int | None = None  # digest of the reference row
        self.warmup = False
        self.features: list[tuple[int, int]] = []  # (partition, offset) of every copy
        self.first_row: int | None = None  # digest of the first streamed copy
        self.row_conflict = False
        self.predicted = 0
        self.predicted_us: int | None = None
        self.prediction: tuple[str, float] | None = None  # (model, score) of the first copy
        self.raw_sent_ms: int | None = None  # Kafka timestamps of the first copies
        self.row_sent_ms: int | None = None


@dataclass
class ProductAccount:
    """One product's line of the ledger."""

    produced: int = 0  # distinct record ids on ticks.raw
    raw_duplicates: int = 0  # extra copies on ticks.raw
    raw_dead_lettered: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # by the engine's reason
    featured: int = 0  # distinct record ids on ticks.features
    feature_duplicates: int = 0
    feature_mismatches: int = 0  # differ from the reference row
    warmup: int = 0  # featured, not to be predicted
    features_dead_lettered: int = 0
    predicted: int = 0  # distinct record ids on predictions.log
    prediction_duplicates: int = 0
    pending: int = 0
    missing_features: int = 0
    missing_predictions: int = 0

    @property
    def missing(self) -> int:
        return self.missing_features + self.missing_predictions

    def as_dict(self) -> dict[str, object]:
        return {
            "produced": self.produced, "raw_duplicates": self.raw_duplicates,
            "raw_dead_lettered": self.raw_dead_lettered, "dropped": dict(self.dropped),
            "featured": self.featured, "feature_duplicates": self.feature_duplicates,
            "feature_mismatches": self.feature_mismatches, "warmup": self.warmup,
            "features_dead_lettered": self.features_dead_lettered,
            "predicted": self.predicted, "prediction_duplicates": self.prediction_duplicates,
            "pending": self.pending, "missing_features": self.missing_features,
            "missing_predictions": self.missing_predictions, "missing": self.missing,
        }


@dataclass
class LedgerReport:
    products: dict[str, ProductAccount]
    problems: dict[str, int]  # every count that must be 0, by name
    examples: dict[str, list[str]]  # a few record ids (or offsets) per problem
    dead_letter_reasons: dict[str, dict[str, int]]  # topic -> reason -> count
    exchange_dead_letters: int  # exchange messages the ingest could not parse (no record id)
    latencies_ms: dict[str, list[float]]  # product -> receive-to-prediction latencies
    drained: bool
    # product -> (receive time, first prediction time) of its predicted ticks, epoch
    # microseconds, in receive order
    flow: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    # where the time went, per predicted tick (ms): ingest (receive -> ticks.raw),
    # featurizer (ticks.raw -> ticks.features), consumer (ticks.features -> prediction)
    stage_latencies_ms: dict[str, list[float]] = field(default_factory=dict)

    def resumed_at(self, wall_us: int, window: int = 1000) -> int | None:
        """When every product had a tick received at or after ``wall_us`` predicted
        (None if one never did): the end of an outage that began at ``wall_us``."""
        latest = None
        for pairs in self.flow.values():
            i = bisect.bisect_left(pairs, (wall_us, -1))
            first = min((p for _, p in pairs[i:i + window]), default=None)
            if first is None:
                return None
            latest = first if latest is None else max(latest, first)
        return latest

    @property
    def balanced(self) -> bool:
        return not any(self.problems.values())

    @property
    def totals(self) -> ProductAccount:
        total = ProductAccount()
        for account in self.products.values():
            for name, value in vars(account).items():
                if isinstance(value, Counter):
                    getattr(total, name).update(value)
                else:
                    setattr(total, name, getattr(total, name) + value)
        return total


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (empty dict for no values)."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    return {f"p{q:g}": ordered[min(n - 1, max(0, math.ceil(q / 100 * n) - 1))] for q in qs}


class Ledger:
    """Feed it the topics (raw first, in partition order), then :meth:`report`."""

    def __init__(self, config: FeatureConfig | None = None, *, predict_warmup: bool = False,
                 emit_interval_ms: int = 0, products: frozenset[str] | None = None,
                 examples: int = 5) -> None:
        self.engine = FeatureEngine(config)
        self.only = products  # account for these products only (None: every product)
        self.predict_warmup = predict_warmup
        self.emit_interval_us = emit_interval_ms * 1000
        self.max_examples = examples
        self.ticks: dict[str, _Tick] = {}
        self.accounts: dict[str, ProductAccount] = defaultdict(ProductAccount)
        self.problems: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)
        self.dlq_reasons: dict[str, Counter[str]] = defaultdict(Counter)
        self.exchange_dead_letters = 0
        self._raw_content: dict[str, bytes] = {}  # fingerprint of each id's first raw copy
        self._bad_raw: dict[tuple[int, int], str] = {}  # (partition, offset) -> product
        self._bad_rows: dict[bytes, tuple[str, int, int]] = {}  # value -> (product, p, o)
        self._raw_dlq_offsets: set[tuple[int, int]] = set()
        self._row_dlq: dict[str, str] = {}  # record id -> reason
        self._row_dlq_values: set[bytes] = set()
        self._buckets: dict[str, int] = {}
        self._unknown_predictions: Counter[str] = Counter()

    def _skip(self, product: str | None) -> bool:
        return self.only is not None and product not in self.only

    def _problem(self, name: str, example: str, n: int = 1) -> None:
        self.problems[name] += n
        if len(self.examples[name]) < self.max_examples:
            self.examples[name].append(example)

    # -- ticks.raw -------------------------------------------------------------------------------
    def add_raw(self, record: Record) -> None:
        try:
            tick = decode_tick(record.value)
        except DecodeError:  # the featurizer must dead-letter it
            product = (record.key or b"").decode(errors="replace") or UNKNOWN_PRODUCT
            if not self._skip(product):
                self._bad_raw[(record.partition, record.offset)] = product
            return
        rid, product = tick.record_id, tick.product_id
        if self._skip(product):
            return
        account = self.accounts[product]
        content = orjson.dumps([tick.event_us, tick.price, tick.best_bid, tick.best_ask,
                                tick.best_bid_quantity, tick.best_ask_quantity])
        known = self.ticks.get(rid)
        res = self.engine.step(tick)
        outcome = self.engine.last_outcome
        if known is not None:  # another copy (at least once): same content, no second row
            account.raw_duplicates += 1
            if self._raw_content[rid] != content:
                self._problem("raw_conflicting_copies", rid)
            if res is not None:
                self._problem("raw_copy_accepted_twice", rid)
            return
        self._raw_content[rid] = content
        state = _Tick(product, record.partition, record.offset, tick.receive_us)
        state.raw_sent_ms = record.timestamp_ms
        self.ticks[rid] = state
        account.produced += 1
        if outcome == MALFORMED:
            self._bad_raw[(record.partition, record.offset)] = product
            state.expect = "dead_letter"
        elif res is None:
            state.expect = outcome
            account.dropped[outcome] += 1
        elif self._throttled(product, res.time_us):
            state.expect = "throttled"
            account.dropped["throttled"] += 1
        else:
            state.expect = "row"
            state.ref = _row_digest(res.time_us, res.warmup, res.values)
            state.warmup = res.warmup

    def _throttled(self, product: str, time_us: int) -> bool:
        """The featurizer's ``EMIT_INTERVAL_MS`` rule: the first accepted tick of
        each interval of event time per product becomes a row."""
        if not self.emit_interval_us:
            return False
        bucket = time_us // self.emit_interval_us
        if self._buckets.get(product) == bucket:
            return True
        self._buckets[product] = bucket
        return False

    def add_raw_dead_letter(self, record: Record) -> None:
        if self._skip((record.key or b"").decode(errors="replace") or None) and \
                record.header("source_offset") is not None:
            return
        reason = record.header("reason") or "unknown"
        self.dlq_reasons["ticks.raw.dlq"][_reason_kind(reason)] += 1
        source = record.header("source_offset")
        if source is None:  # the ingest's: an exchange message that could not be parsed
            self.exchange_dead_letters += 1
            return
        try:
            partition, offset = (int(x) for x in source.split(":"))
        except ValueError:
            self._problem("dead_letters_without_source", source)
            return
        self._raw_dlq_offsets.add((partition, offset))

    # -- ticks.features --------------------------------------------------------------------------
    def add_feature(self, record: Record) -> None:
        try:  # what the consumer accepts
            row = decode_row(record.value)
        except DecodeError:  # the consumer must dead-letter it
            key = (record.key or b"").decode(errors="replace") or UNKNOWN_PRODUCT
            if not self._skip(key):  # its dead letter keeps the start of it
                self._bad_rows[(record.value or b"")[:DEAD_LETTER_MAX_BYTES]] = (
                    key, record.partition, record.offset)
            return
        rid = row.record_id
        if self._skip(row.product_id):
            return
        values = [row.features.get(name, _NAN) for name in FEATURE_NAMES]
        digest = _row_digest(to_micros(row.event_time), row.warmup,
                             [_NAN if v is None else v for v in values])
        state = self.ticks.get(rid)
        if state is None:
            self._problem("rows_without_tick", rid)
            return
        account = self.accounts[state.product]
        state.features.append((record.partition, record.offset))
        if len(state.features) > 1:
            account.feature_duplicates += 1
            if digest != state.first_row:
                state.row_conflict = True
                self._problem("rows_conflicting_copies", rid)
            return
        state.first_row = digest
        state.row_sent_ms = record.timestamp_ms
        if state.expect != "row":
            self._problem("rows_not_due", f"{rid} ({state.expect})")
            return
        account.featured += 1
        if digest != state.ref:
            account.feature_mismatches += 1
            self._problem("rows_differ_from_reference", rid)

    def add_feature_dead_letter(self, record: Record) -> None:
        if self._skip((record.key or b"").decode(errors="replace") or None):
            return
        reason = record.header("reason") or "unknown"
        self.dlq_reasons["ticks.features.dlq"][_reason_kind(reason)] += 1
        value = record.value or b""
        try:
            rid = orjson.loads(value)["record_id"]
        except (ValueError, KeyError, TypeError):
            rid = None
        if isinstance(rid, str) and rid in self.ticks:
            self._row_dlq[rid] = reason
        self._row_dlq_values.add(value)

    # -- predictions -----------------------------------------------------------------------------
    def add_prediction(self, value: bytes, where: str = "predictions.log") -> None:
        try:
            doc = orjson.loads(value)
            rid = doc["record_id"]
            predicted_us = parse_micros(doc["predicted_time"])
            scored = (f'{doc["model_variant"]}/{doc["model_version"]}', float(doc["score"]))
        except (ValueError, KeyError, TypeError):
            self._problem("predictions_unreadable", f"{where}: {value[:80]!r}")
            return
        if self._skip(doc.get("product_id")):
            return
        state = self.ticks.get(rid) if isinstance(rid, str) else None
        if state is None or not state.features:
            self._problem("predictions_without_row", str(rid))
            return
        state.predicted += 1
        account = self.accounts[state.product]
        if state.predicted > 1:
            account.prediction_duplicates += 1
            first = state.prediction
            if first is not None and first[0] == scored[0] and first[1] != scored[1]:
                # the same model scored the same row differently
                self._problem("predictions_conflicting_copies", rid)
        else:
            state.prediction = scored
        if state.predicted_us is None or predicted_us < state.predicted_us:
            state.predicted_us = predicted_us

    # -- the verdict -----------------------------------------------------------------------------
    def report(self, featurizer_committed: dict[int, int] | None = None,
               consumer_committed: dict[int, int] | None = None,
               drained: bool = False) -> LedgerReport:
        """Settle every record id. ``*_committed`` (partition -> next offset of the
        stage's consumer group) tell what is still in flight; with ``drained`` (or
        without offsets) nothing may be in flight."""
        drained = drained or featurizer_committed is None or consumer_committed is None

        def raw_pending(partition: int, offset: int) -> bool:
            return not drained and offset >= featurizer_committed.get(partition, 0)  # type: ignore[union-attr]

        def row_pending(copies: list[tuple[int, int]]) -> bool:
            return not drained and all(
                o >= consumer_committed.get(p, 0) for p, o in copies)  # type: ignore[union-attr]

        for (partition, offset), product in self._bad_raw.items():
            if (partition, offset) in self._raw_dlq_offsets:
                self.accounts[product].raw_dead_lettered += 1
            elif raw_pending(partition, offset):
                self.accounts[product].pending += 1
            else:
                self._problem("malformed_ticks_not_dead_lettered", f"{partition}:{offset}")
        for value, (product, _p, offset) in self._bad_rows.items():
            if value in self._row_dlq_values:
                self.accounts[product].features_dead_lettered += 1
            elif not row_pending([(_p, offset)]):
                self._problem("malformed_rows_not_dead_lettered", f"{_p}:{offset}")

        latencies: dict[str, list[float]] = defaultdict(list)
        flow: dict[str, list[tuple[int, int]]] = defaultdict(list)
        stages: dict[str, list[float]] = {"ingest": [], "featurizer": [], "consumer": []}
        for rid, state in self.ticks.items():
            account = self.accounts[state.product]
            if state.expect != "row":
                continue
            if not state.features:
                if raw_pending(state.partition, state.offset):
                    account.pending += 1
                else:
                    account.missing_features += 1
                    self._problem("missing_rows", rid)
                continue
            if state.warmup and not self.predict_warmup:
                account.warmup += 1
                if state.predicted:
                    self._problem("warmup_rows_predicted", rid)
                continue
            if rid in self._row_dlq:
                account.features_dead_lettered += 1
                continue
            if state.predicted:
                account.predicted += 1
                if state.predicted_us is not None:
                    latencies[state.product].append((state.predicted_us - state.receive_us) / 1e3)
                    flow[state.product].append((state.receive_us, state.predicted_us))
                    if state.raw_sent_ms is not None and state.row_sent_ms is not None:
                        stages["ingest"].append(state.raw_sent_ms - state.receive_us / 1e3)
                        stages["featurizer"].append(state.row_sent_ms - state.raw_sent_ms)
                        stages["consumer"].append(state.predicted_us / 1e3 - state.row_sent_ms)
            elif row_pending(state.features):
                account.pending += 1
            else:
                account.missing_predictions += 1
                self._problem("missing_predictions", rid)

        for name in ("missing_rows", "missing_predictions", "rows_differ_from_reference",
                     "rows_conflicting_copies", "raw_conflicting_copies",
                     "malformed_ticks_not_dead_lettered", "malformed_rows_not_dead_lettered",
                     "rows_without_tick", "predictions_without_row", "rows_not_due",
                     "predictions_conflicting_copies"):
            self.problems.setdefault(name, 0)
        return LedgerReport(
            products=dict(sorted(self.accounts.items())),
            problems=dict(self.problems),
            examples={k: v for k, v in self.examples.items() if v},
            dead_letter_reasons={t: dict(c) for t, c in self.dlq_reasons.items()},
            exchange_dead_letters=self.exchange_dead_letters,
            latencies_ms=dict(latencies),
            drained=drained,
            flow={product: sorted(pairs) for product, pairs in flow.items()},
            stage_latencies_ms={k: v for k, v in stages.items() if v},
        )


def _reason_kind(reason: str) -> str:
    """A dead-letter reason without its details (``invalid tick: x: y`` -> ``invalid tick``)."""
    return reason.split(":", 1)[0].strip()[:80] or "unknown"
