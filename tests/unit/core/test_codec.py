"""One codec: every message it writes is its pydantic schema's, read back equal,
and it reads what the schema accepts and nothing else."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptovol.core.codec import (
    DecodeError,
    decode_row,
    decode_tick,
    encode_record,
    encode_row,
    encode_tick,
    tick_of,
)
from cryptovol.core.features import FEATURE_NAMES, StepResult
from cryptovol.core.schemas import FeatureRow, PredictionRecord, RawTick
from cryptovol.core.ticks import Tick, tick_record_id
from cryptovol.core.timestamps import format_micros, from_micros, to_micros

MICROS = st.integers(min_value=1_500_000_000_000_000, max_value=2_500_000_000_000_000)
POSITIVE = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False)
MAYBE = st.none() | st.floats(allow_nan=False, allow_infinity=False, width=64)
TICKS = st.builds(
    Tick,
    record_id=st.text(min_size=1, max_size=20), product_id=st.text(min_size=1, max_size=12),
    event_us=MICROS, receive_us=MICROS, price=POSITIVE, best_bid=MAYBE, best_ask=MAYBE,
    best_bid_quantity=MAYBE, best_ask_quantity=MAYBE,
    sequence_num=st.none() | st.integers(0, 2**40),
    event_type=st.sampled_from(["update", "snapshot"]),
    source=st.sampled_from(["live", "replay", "fake"]),
    volume_24h=MAYBE, low_24h=MAYBE, high_24h=MAYBE, price_percent_chg_24h=MAYBE,
).map(lambda t: t._replace(receive_us=max(t.receive_us, t.event_us)))  # exchange clocks run
# ahead of ours by minutes at most (ticks that claim more are refused, tested below)


def schema_of(tick: Tick) -> RawTick:
    """The message a tick stands for, built field by field from the schema."""
    fields = tick._asdict()
    return RawTick(event_time=from_micros(fields.pop("event_us")),
                   receive_time=from_micros(fields.pop("receive_us")), **fields)


@given(TICKS)
def test_a_tick_round_trips_through_its_schema(tick: Tick) -> None:
    message = RawTick.model_validate_json(encode_tick(tick))
    assert message == schema_of(tick)
    assert tick_of(message) == tick
    assert decode_tick(encode_tick(tick)) == tick
    assert decode_tick(schema_of(tick).model_dump_json()) == tick


@given(TICKS)
def test_other_spellings_the_schema_accepts_decode_to_the_same_tick(tick: Tick) -> None:
    doc = orjson.loads(encode_tick(tick))
    doc["event_time"] = from_micros(tick.event_us).isoformat()  # +00:00, not Z
    doc["price"] = str(tick.price)  # a numeric string: the schema coerces it
    doc.pop("sequence_num")
    doc["unknown"] = "ignored"
    assert decode_tick(orjson.dumps(doc)) == tick._replace(sequence_num=None)


@pytest.mark.parametrize(("raw", "fragment"), [
    (None, "empty"), (b"", "empty"), (b"{not json", "invalid JSON"), (b"[1, 2]", "not a JSON"),
    (b'{"record_id": "r"}', "invalid tick"),
    (b'{"record_id": "r", "product_id": "X", "event_time": "yesterday", '
     b'"receive_time": "2025-12-06T01:12:47.761914Z", "price": 1.0}', "event_time"),
    (b'{"record_id": "r", "product_id": "X", "event_time": "2025-12-06T01:12:47.761914Z", '
     b'"receive_time": "2025-12-06T01:12:47.761914Z", "price": 1.0, "source": "mars"}', "source"),
    # shaped like the encoder's output (the fast path), but not a tick this build can read
    (b'{"schema_version": 2, "record_id": "r", "product_id": "X", "event_time": '
     b'"2025-12-06T01:12:47Z", "receive_time": "2025-12-06T01:12:47Z", "price": 1.0}',
     "schema_version 2 is not supported"),
    (b'{"record_id": "r", "product_id": "", "event_time": "2025-12-06T01:12:47Z", '
     b'"receive_time": "2025-12-06T01:12:47Z", "price": 1.0}', "product_id"),
    (b'{"record_id": "r", "product_id": "X", "event_time": "2999-01-01T00:00:00Z", '
     b'"receive_time": "2025-12-06T01:12:47Z", "price": 1.0}', "after receive_time"),
    (b'{"record_id": "r", "product_id": "X", "event_time": "1970-01-01T00:00:01Z", '
     b'"receive_time": "2025-12-06T01:12:47Z", "price": 1.0}', "before 2015"),
])
def test_malformed_ticks_raise_one_error_type(raw: bytes | None, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        decode_tick(raw)


def test_record_ids_are_exact_integer_microseconds() -> None:
    assert tick_record_id("BTC-USD", 1_764_983_567_761_914, 2) == "BTC-USD:1764983567761914:2"
    assert tick_record_id("BTC-USD", 1, 0) != tick_record_id("BTC-USD", 1, 1)


def _result(values: tuple[float, ...], time_us: int, warmup: bool = False) -> StepResult:
    return StepResult(time_us, warmup, 0, values)


@given(TICKS, st.lists(st.floats(allow_infinity=False, allow_subnormal=True),
                       min_size=len(FEATURE_NAMES), max_size=len(FEATURE_NAMES)), st.booleans())
def test_a_feature_row_is_its_schema_with_nan_as_null(tick: Tick, values, warmup: bool) -> None:
    res = _result(tuple(values), tick.event_us - 1, warmup)
    row = decode_row(encode_row(tick, res))
    assert row == FeatureRow.model_validate_json(encode_row(tick, res))
    assert (row.record_id, row.product_id, row.warmup) == (tick.record_id, tick.product_id, warmup)
    assert to_micros(row.event_time) == res.time_us  # the time the windows used
    assert to_micros(row.receive_time) == tick.receive_us
    assert list(row.features) == list(FEATURE_NAMES)
    for name, value in zip(FEATURE_NAMES, values, strict=True):
        assert row.features[name] == (None if math.isnan(value) else value)
    # byte for byte what the plain way writes: the message as a dict, dumped
    assert encode_row(tick, res) == orjson.dumps({
        "schema_version": 1, "record_id": tick.record_id, "product_id": tick.product_id,
        "event_time": format_micros(res.time_us), "receive_time": format_micros(tick.receive_us),
        "warmup": warmup, "features": dict(zip(FEATURE_NAMES, values, strict=True))})


@pytest.mark.parametrize(("raw", "fragment"), [
    (None, "empty"), (b"nope", "invalid JSON"), (b'{"record_id": "r"}', "invalid feature row"),
    (b'{"record_id": "r", "product_id": "X", "event_time": "2025-12-06T01:12:47Z", '
     b'"receive_time": "2025-12-06T01:12:47Z", "warmup": false, "features": {}}', "no features"),
    (b'{"schema_version": 2, "record_id": "r", "product_id": "X", "event_time": '
     b'"2025-12-06T01:12:47Z", "receive_time": "2025-12-06T01:12:47Z", "warmup": false, '
     b'"features": {"n": 1.0}}', "schema_version 2 is not supported"),
])
def test_malformed_rows_raise_one_error_type(raw: bytes | None, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        decode_row(raw)


def test_records_are_their_schema() -> None:
    t = from_micros(1_764_983_567_761_914)
    record = PredictionRecord(record_id="r", product_id="BTC-USD", event_time=t, predicted_time=t,
                              score=0.4, spike=False, threshold=0.5, model_variant="ml",
                              model_version="v1", api_latency_ms=1.0, e2e_latency_ms=2.0)
    raw = encode_record(record)
    assert orjson.loads(raw)["event_time"] == "2025-12-06T01:12:47.761914Z"
    assert PredictionRecord.model_validate_json(raw) == record
