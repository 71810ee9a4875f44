"""Bytes of the pipeline's topics to values and back (pure).

- ``ticks.raw``: :func:`encode_tick` / :func:`decode_tick` (:class:`~cryptovol.core.ticks.Tick`);
- ``ticks.features``: :func:`feature_row` (the one builder of a row, as the
  message's fields) / :func:`encode_row` / :func:`decode_row`;
- ``predictions.log`` and any other record: :func:`encode_record`.

Every message is exactly its pydantic schema (:mod:`cryptovol.core.schemas`):
what the encoders write the schema reads back equal, and the decoders accept
what the schema accepts and nothing else. :func:`decode_tick` reads the fields
straight from the JSON when a message has exactly the shape the encoder writes
(the hot path) and validates anything else through the schema.
"""

from __future__ import annotations

from typing import Any

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
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import format_micros, parse_micros, to_micros


class DecodeError(ValueError):
    """A message that does not match its schema (it is dead-lettered, never fatal)."""


_OPTIONAL_FLOATS = ("best_bid", "best_ask", "best_bid_quantity", "best_ask_quantity",
                    "volume_24h", "low_24h", "high_24h", "price_percent_chg_24h")
_NUMBER = (float, int)
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


def _float_or_none(doc: dict, key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) in _NUMBER:
        return float(value)
    raise TypeError(key)


def _fast_tick(doc: dict) -> Tick:
    """The fields of a message shaped like :func:`encode_tick`'s; ``TypeError``,
    ``KeyError`` or ``ValueError`` for anything else."""
    rid, pid, price = doc["record_id"], doc["product_id"], doc["price"]
    if type(rid) is not str or type(pid) is not str or type(price) not in _NUMBER \
            or not rid or not pid or doc.get("schema_version", 1) != RAW_TICK_SCHEMA_VERSION:
        raise TypeError("fields")
    seq = doc.get("sequence_num")
    event_type = doc.get("event_type", "update")
    source = doc.get("source", "live")
    if (seq is not None and type(seq) is not int) or event_type not in _EVENT_TYPES \
            or source not in _SOURCES:
        raise TypeError("fields")
    return Tick(rid, pid, parse_micros(doc["event_time"]), parse_micros(doc["receive_time"]),
                float(price), _float_or_none(doc, "best_bid"), _float_or_none(doc, "best_ask"),
                _float_or_none(doc, "best_bid_quantity"), _float_or_none(doc, "best_ask_quantity"),
                seq, event_type, source, _float_or_none(doc, "volume_24h"),
                _float_or_none(doc, "low_24h"), _float_or_none(doc, "high_24h"),
                _float_or_none(doc, "price_percent_chg_24h"))


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


def feature_row(tick: Tick, result: StepResult) -> dict[str, Any]:
    """The ``ticks.features`` message of a tick's features, as its fields. Its
    ``event_time`` is the time the windows used (clamped for an out-of-order
    tick); a feature that is undefined (NaN) is null."""
    return {
        "schema_version": FEATURE_ROW_SCHEMA_VERSION,
        "record_id": tick.record_id,
        "product_id": tick.product_id,
        "event_time": format_micros(result.time_us),
        "receive_time": format_micros(tick.receive_us),
        "warmup": result.warmup,
        "features": dict(zip(FEATURE_NAMES, result.values, strict=True)),
    }


def encode_row(tick: Tick, result: StepResult) -> bytes:
    return orjson.dumps(feature_row(tick, result))  # orjson writes NaN as null


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
