"""The ledger's bookkeeping on records built the way the stages build them: it
balances on a clean run and turns red, naming the record, on every kind of loss."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cryptovol.core.codec import decode_tick, encode_record, encode_row, encode_tick
from cryptovol.core.features import FeatureEngine
from cryptovol.core.schemas import PredictionRecord
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import from_micros
from cryptovol.devtools.ledger import Ledger, Record
from cryptovol.devtools.ledger.report import as_json, as_text
from cryptovol.runtime.recordings import open_recordings, read_ticks

REPO = Path(__file__).resolve().parents[3]
RECORDING = REPO / "data/coinbase-ticker/ticks_BTCUSD_20251201_164446_10min.ndjson.gz"
N_TICKS = 2400  # ~6 minutes
PARTITIONS = {"BTC-USD": 0, "ETH-USD": 1}


class Run:
    """ticks.raw, ticks.features and predictions.log of an undisturbed pipeline
    (the stages' own codec), the consumer scoring every row, warm-up rows
    too (``PREDICT_WARMUP``), so the tests do not depend on how long the
    features' warm-up is; ``warm_predictions`` are those of the warm rows."""

    def __init__(self) -> None:
        base = list(read_ticks(open_recordings([RECORDING])))[:N_TICKS]
        ticks = []
        for tick in base:  # two products, one partition each
            ticks.append(tick)
            rid = "ETH-USD" + tick.record_id[len("BTC-USD"):]
            ticks.append(tick._replace(product_id="ETH-USD", record_id=rid))
        self.raw: list[Record] = []
        self.features: list[Record] = []
        self.predictions: list[bytes] = []
        self.warm_predictions: list[bytes] = []
        self.raw_dlq: list[Record] = []
        self.features_dlq: list[Record] = []
        offsets = {0: 0, 1: 0}
        row_offsets = {0: 0, 1: 0}
        engine = FeatureEngine()
        for tick in ticks:
            partition = PARTITIONS[tick.product_id]
            self.raw.append(Record(partition, offsets[partition], encode_tick(tick),
                                   tick.product_id.encode()))
            offsets[partition] += 1
            res = engine.step(decode_tick(encode_tick(tick)))
            if res is None:
                continue
            value = encode_row(tick, res)
            self.features.append(Record(partition, row_offsets[partition], value))
            row_offsets[partition] += 1
            self.predictions.append(self.prediction(tick))
            if not res.warmup:
                self.warm_predictions.append(self.predictions[-1])

    @staticmethod
    def prediction(tick: Tick, score: float = 0.25) -> bytes:
        return encode_record(PredictionRecord(
            record_id=tick.record_id, product_id=tick.product_id,
            event_time=from_micros(tick.event_us),
            predicted_time=from_micros(tick.receive_us + 40_000), score=score,
            spike=False, threshold=0.5, model_variant="ml", model_version="random_forest",
            api_latency_ms=3.0, e2e_latency_ms=40.0))

    def ledger(self, **kwargs: object) -> Ledger:
        ledger = Ledger(**{"predict_warmup": True, **kwargs})  # type: ignore[arg-type]
        for record in self.raw:
            ledger.add_raw(record)
        for record in self.raw_dlq:
            ledger.add_raw_dead_letter(record)
        for record in self.features:
            ledger.add_feature(record)
        for record in self.features_dlq:
            ledger.add_feature_dead_letter(record)
        for value in self.predictions:
            ledger.add_prediction(value)
        return ledger


@pytest.fixture(scope="module")
def clean() -> Run:
    return Run()


@pytest.fixture
def run(clean: Run) -> Run:
    copy = Run.__new__(Run)
    for name in ("raw", "features", "predictions", "warm_predictions", "raw_dlq",
                 "features_dlq"):
        setattr(copy, name, list(getattr(clean, name)))
    return copy


def rid_of(value: bytes) -> str:
    return orjson.loads(value)["record_id"]


def test_a_clean_run_balances_with_every_tick_accounted_for(run: Run):
    report = run.ledger().report()
    assert report.balanced, report.problems
    totals = report.totals
    assert totals.produced == len(run.raw) == 2 * N_TICKS
    assert totals.featured == len(run.features)
    assert totals.predicted == len(run.predictions) == totals.featured
    assert totals.warmup == 0  # every row is scored
    assert totals.missing == 0 and totals.pending == 0
    assert set(report.products) == {"BTC-USD", "ETH-USD"}
    assert report.products["BTC-USD"].predicted == report.products["ETH-USD"].predicted
    text = as_text(report)
    assert "LEDGER BALANCED" in text and "BTC-USD" in text
    doc = as_json(report)
    assert doc["balanced"] is True and doc["latency_ms"]["all"]["p50"] == pytest.approx(40.0)


def test_a_lost_prediction_turns_the_ledger_red_and_names_the_record(run: Run):
    lost = run.predictions.pop(100)
    report = run.ledger().report()
    assert not report.balanced
    assert report.problems["missing_predictions"] == 1
    assert report.examples["missing_predictions"] == [rid_of(lost)]
    assert report.totals.missing_predictions == 1
    assert "LEDGER RED: 1 missing" in as_text(report)


def test_a_lost_feature_row_is_missing_once_not_twice(run: Run):
    lost = run.features.pop(-1)
    run.predictions = [p for p in run.predictions if rid_of(p) != rid_of(lost.value)]
    report = run.ledger().report()
    assert report.problems["missing_rows"] == 1 and report.problems["missing_predictions"] == 0
    assert report.examples["missing_rows"] == [rid_of(lost.value)]


def test_identical_copies_are_duplicates_and_still_balance(run: Run):
    run.raw.append(run.raw[500])  # an ingest restart resends a tick
    run.features.append(run.features[-3])  # a featurizer replays a batch
    run.predictions += run.predictions[:7]  # the consumer re-predicts after a crash
    report = run.ledger().report()
    assert report.balanced, report.problems
    totals = report.totals
    assert (totals.raw_duplicates, totals.feature_duplicates, totals.prediction_duplicates) \
        == (1, 1, 7)
    assert not totals.dropped  # copies are duplicates, not dropped ticks
    assert "raw_copy_accepted_twice" not in report.problems  # the engine refused the copy


def test_copies_with_different_content_are_conflicts(run: Run):
    row = orjson.loads(run.features[-1].value)
    row["features"]["rv_60s"] = (row["features"]["rv_60s"] or 0) + 1e-12
    run.features.append(Record(0, 99_999, orjson.dumps(row)))
    tick = decode_tick(run.raw[-2].value)
    run.predictions.append(Run.prediction(tick, score=0.75))
    run.predictions.append(Run.prediction(tick, score=0.75))
    report = run.ledger().report()
    assert report.problems["rows_conflicting_copies"] == 1
    assert report.problems["predictions_conflicting_copies"] >= 1


def test_a_row_that_differs_from_the_reference_engine_is_reported(run: Run):
    row = orjson.loads(run.features[10].value)
    row["features"]["n"] = 12345.0
    run.features[10] = Record(run.features[10].partition, 10, orjson.dumps(row))
    report = run.ledger().report()
    assert report.problems["rows_differ_from_reference"] == 1
    assert report.examples["rows_differ_from_reference"] == [row["record_id"]]


def test_malformed_ticks_must_be_dead_lettered_with_their_offset(run: Run):
    run.raw.append(Record(0, 5000, b"this is not JSON", b"BTC-USD"))
    negative = orjson.loads(run.raw[0].value) | {"price": -1.0, "record_id": "BTC-USD:1:0"}
    run.raw.append(Record(0, 5001, orjson.dumps(negative), b"BTC-USD"))
    report = run.ledger().report()
    assert report.problems["malformed_ticks_not_dead_lettered"] == 2
    run.raw_dlq = [Record(0, i, raw.value, headers=(("reason", b"invalid JSON: x"),
                                                    ("source_offset", f"0:{raw.offset}".encode())))
                   for i, raw in enumerate(run.raw[-2:])]
    run.raw_dlq.append(Record(0, 2, b"{}", headers=(("reason", b"bad_envelope: x"),)))
    report = run.ledger().report()
    assert report.balanced, report.problems
    assert report.products["BTC-USD"].raw_dead_lettered == 2
    assert report.exchange_dead_letters == 1
    assert report.dead_letter_reasons["ticks.raw.dlq"] == {"invalid JSON": 2, "bad_envelope": 1}


def test_rows_rejected_by_the_api_are_dead_lettered_not_missing(run: Run):
    rejected = run.predictions.pop(0)
    row = next(r for r in run.features if rid_of(r.value) == rid_of(rejected))
    run.features_dlq.append(Record(0, 0, row.value, headers=(
        ("reason", b"rejected by /predict: 422"),)))
    report = run.ledger().report()
    assert report.balanced, report.problems
    assert report.totals.features_dead_lettered == 1


def test_records_in_flight_are_pending_until_the_run_is_declared_drained(run: Run):
    # the featurizer has committed partition 1 up to raw offset 1500 and produced no
    # row after it yet; the consumer has committed partition 0 up to the row at the
    # offset of its 5th-last prediction
    raw_of = {rid_of(r.value): r.offset for r in run.raw}
    late_rows = {rid_of(r.value) for r in run.features
                 if r.partition == 1 and raw_of[rid_of(r.value)] >= 1500}
    run.features = [r for r in run.features if rid_of(r.value) not in late_rows]
    run.predictions = [p for p in run.predictions if rid_of(p) not in late_rows]
    row_of = {rid_of(r.value): r for r in run.features}
    btc = [p for p in run.predictions if row_of[rid_of(p)].partition == 0]
    unscored = btc[-5:]
    run.predictions = [p for p in run.predictions if p not in unscored]
    first_unscored = row_of[rid_of(unscored[0])].offset
    report = run.ledger().report(featurizer_committed={0: 10**9, 1: 1500},
                                 consumer_committed={0: first_unscored, 1: 10**9})
    assert report.balanced, (report.problems, report.examples)
    assert report.products["BTC-USD"].pending == 5
    assert report.products["ETH-USD"].pending == N_TICKS - 1500 == len(late_rows)
    drained = run.ledger().report(drained=True)
    assert not drained.balanced and drained.totals.missing == report.totals.pending


def test_warmup_rows_are_predicted_only_when_the_consumer_is_told_to(run: Run):
    # a consumer that skips warm-up rows predicts the warm ones only (maybe none)
    run.predictions = run.warm_predictions
    report = run.ledger(predict_warmup=False).report()
    assert report.balanced, report.problems
    totals = report.totals
    assert totals.predicted == len(run.warm_predictions)
    assert totals.warmup == totals.featured - totals.predicted > 0
    # expected to score them, the same run misses every warm-up row
    report = run.ledger(predict_warmup=True).report()
    assert report.problems["missing_predictions"] == totals.warmup == report.totals.missing


def test_rows_and_predictions_for_unknown_ticks_are_problems(run: Run):
    stranger = Tick("DOGE-USD:1:0", "DOGE-USD", 1_735_689_600_000_000, 1_735_689_600_000_000,
                    1.0)
    run.predictions.append(Run.prediction(stranger))
    report = run.ledger().report()
    assert report.problems["predictions_without_row"] == 1
