"""Bytes of the pipeline's topics to values and back (pure).

- ``ticks.raw``: :func:`encode_tick` / :func:`decode_tick` (:class:`~cryptovol.core.ticks.Tick`);
- ``ticks.features``: :func:`encode_row` (the one builder of a row) /
  :func:`decode_row`;
- ``predictions.log`` and any other record: :func:`encode_record`.

Every message is exactly its pydantic schema (:mod:`cryptovol.core.schemas`):
what the encoders write the schema reads back equal, and the decoders accept
what the schema accepts and nothing else. :func:`decode_tick` reads the fields
straight from the JSON when a message has exactly the shape the encoder writes
(the hot path) and validates anything else through the schema.
"""

from __future__ import annotations

import orjson
from pydantic import BaseModel, ValidationError

from cryptovol.core.features.engine import StepResult
from cryptovol.core.features.names import FEATURE_NAMES
from cryptovol.core.schemas import (
    FEATURE_ROW_SCHEMA_VERSION,
    RAW_TICK_SCHEMA_VERSION,
    FeatureRow,
    RawTick,
)
from cryptovol.core.ticks import Tick, implausible_event_time
from cryptovol.core.timestamps import format_micros, parse_micros, to_micros


class DecodeError(ValueError):
    """A message that does not match its schema (it is dead-lettered, never fatal)."""


_EVENT_TYPES = ("update", "snapshot")
_SOURCES = ("live", "replay", "fake")


def encode_tick(tick: Tick) -> bytes:
    return orjson.dumps({
        "schema_version": RAW_TICK_SCHEMA_VERSION,
        "record_id": tick.record_id,
        "product_id": tick.product_id,
        "event_time": format_micros(tick.event_us),
        "receive_time": format_micros(tick.receive_us),
        "sequence_num": tick.sequence_num,
        "event_type": tick.event_type,
        "source": tick.source,
        "price": tick.price,
        "best_bid": tick.best_bid,
        "best_ask": tick.best_ask,
        "best_bid_quantity": tick.best_bid_quantity,
        "best_ask_quantity": tick.best_ask_quantity,
        "volume_24h": tick.volume_24h,
        "low_24h": tick.low_24h,
        "high_24h": tick.high_24h,
        "price_percent_chg_24h": tick.price_percent_chg_24h,
    })


def _load(raw: bytes | str | None) -> dict:
    if not raw:
        raise DecodeError("empty message")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DecodeError("not a JSON object")
    return doc


def _invalid(exc: ValidationError, what: str) -> DecodeError:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return DecodeError(f"invalid {what}: {where}: {first['msg']}")


def _optional(value: object) -> float | None:
    if value is None or type(value) is float:
        return value  # type: ignore[return-value]
    if type(value) is int:
        return float(value)
    raise TypeError("not a number")


def _fast_tick(doc: dict) -> Tick:
    """The fields of a message shaped like :func:`encode_tick`'s; ``TypeError``,
    ``KeyError`` or ``ValueError`` for anything else. Straight-line code: this
    runs once for every tick the featurizer reads."""
    get = doc.get
    rid, pid, price = doc["record_id"], doc["product_id"], doc["price"]
    seq = get("sequence_num")
    event_type, source = get("event_type", "update"), get("source", "live")
    if type(rid) is not str or type(pid) is not str or not rid or not pid \
            or (type(price) is not float and type(price) is not int) \
            or get("schema_version", RAW_TICK_SCHEMA_VERSION) != RAW_TICK_SCHEMA_VERSION \
            or (seq is not None and type(seq) is not int) \
            or event_type not in _EVENT_TYPES or source not in _SOURCES:
        raise TypeError("fields")
    bid, ask = get("best_bid"), get("best_ask")
    bid_qty, ask_qty = get("best_bid_quantity"), get("best_ask_quantity")
    volume, low, high, change = (get("volume_24h"), get("low_24h"), get("high_24h"),
                                 get("price_percent_chg_24h"))
    f = float
    if not (type(bid) is f and type(ask) is f and type(bid_qty) is f and type(ask_qty) is f
            and type(volume) is f and type(low) is f and type(high) is f and type(change) is f):
        bid, ask, bid_qty, ask_qty, volume, low, high, change = map(
            _optional, (bid, ask, bid_qty, ask_qty, volume, low, high, change))
    event_us, receive_us = parse_micros(doc["event_time"]), parse_micros(doc["receive_time"])
    if implausible_event_time(event_us, receive_us):
        raise ValueError("event time")  # the schema, which refuses it too, says why
    return Tick(rid, pid, event_us, receive_us, float(price), bid, ask, bid_qty, ask_qty, seq,
                event_type, source, volume, low, high, change)


def decode_tick(raw: bytes | str | None) -> Tick:
    """The tick of a ``ticks.raw`` message; :class:`DecodeError` if it is not one."""
    doc = _load(raw)
    try:
        return _fast_tick(doc)
    except (KeyError, TypeError, ValueError):
        pass
    try:
        return tick_of(RawTick.model_validate(doc))
    except ValidationError as exc:
        raise _invalid(exc, "tick") from exc


def tick_of(message: RawTick) -> Tick:
    """The tick of a validated ``ticks.raw`` message."""
    return Tick(
        message.record_id, message.product_id, to_micros(message.event_time),
        to_micros(message.receive_time), message.price, message.best_bid, message.best_ask,
        message.best_bid_quantity, message.best_ask_quantity, message.sequence_num,
        message.event_type, message.source, message.volume_24h, message.low_24h,
        message.high_24h, message.price_percent_chg_24h,
    )


# the features object with a slot for each value, in FEATURE_NAMES order
_ROW_TEMPLATE = b'%s,"features":{' + b",".join(
    orjson.dumps(name) + b":%s" for name in FEATURE_NAMES) + b"}}"


def encode_row(tick: Tick, result: StepResult) -> bytes:
    """The ``ticks.features`` message of a tick's features: the one builder of a
    row. Its ``event_time`` is the time the windows used (clamped for an
    out-of-order tick); a feature that is undefined (NaN) is null.

    Byte for byte what ``orjson.dumps`` writes for the message as a dict, built
    faster: the features are serialized as one list of floats (which never
    contain a comma) and dropped into a template that holds their names."""
    head = orjson.dumps({
        "schema_version": FEATURE_ROW_SCHEMA_VERSION,
        "record_id": tick.record_id,
        "product_id": tick.product_id,
        "event_time": format_micros(result.time_us),
        "receive_time": format_micros(tick.receive_us),
        "warmup": result.warmup,
    })
    values = orjson.dumps(result.values)[1:-1].split(b",")  # orjson writes NaN as null
    return _ROW_TEMPLATE % (head[:-1], *values)


def decode_row(raw: bytes | str | None) -> FeatureRow:
    """The validated row of a ``ticks.features`` message; :class:`DecodeError` if it
    is not one (or has no features)."""
    _load(raw)
    try:
        row = FeatureRow.model_validate_json(raw)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise _invalid(exc, "feature row") from exc
    if not row.features:
        raise DecodeError("feature row has no features")
    return row


def encode_record(record: BaseModel) -> bytes:
    """Any schema record (a prediction, say) as its message."""
    return record.model_dump_json().encode()
