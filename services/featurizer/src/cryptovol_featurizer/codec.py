"""Bytes in, bytes out: ``ticks.raw`` messages to engine inputs, and feature
rows to ``ticks.features`` messages (pure).

The hot path reads the fields the engine needs straight from the JSON; any
message that does not have exactly the expected shape goes through the
:class:`~cryptovol.core.schemas.RawTick` model instead, so the accepted inputs are
the schema's and nothing else.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

import orjson
from pydantic import ValidationError

from cryptovol.core.features import FEATURE_NAMES, StepResult, to_micros
from cryptovol.core.schemas import FEATURE_ROW_SCHEMA_VERSION, RawTick

_EPOCH = datetime(1970, 1, 1)
_OPTIONAL = ("best_bid", "best_ask", "best_bid_quantity", "best_ask_quantity")
_NUMBER = (float, int)


class MalformedTick(ValueError):
    """A ``ticks.raw`` message that is not a usable tick (dead-lettered)."""


class TickIn(NamedTuple):
    record_id: str
    product_id: str
    event_us: int
    receive_us: int
    price: float
    best_bid: float | None
    best_ask: float | None
    bid_qty: float | None
    ask_qty: float | None


def _micros(value: str) -> int:
    return to_micros(datetime.fromisoformat(value))


def _optional(doc: dict, key: str) -> float | None:
    value = doc.get(key)
    if value is None or type(value) in _NUMBER:
        return value
    raise TypeError(key)


def parse_tick(raw: bytes | None) -> TickIn:
    if not raw:
        raise MalformedTick("empty message")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedTick(f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedTick("not a JSON object")
    try:  # the shape the ingest writes
        rid, pid, price = doc["record_id"], doc["product_id"], doc["price"]
        if type(rid) is not str or type(pid) is not str or type(price) not in _NUMBER \
                or not rid or not pid:
            raise TypeError("fields")
        return TickIn(rid, pid, _micros(doc["event_time"]), _micros(doc["receive_time"]),
                      float(price), *(_optional(doc, k) for k in _OPTIONAL))
    except (KeyError, TypeError, ValueError):
        pass
    try:  # anything else the schema accepts
        tick = RawTick.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise MalformedTick(f"invalid tick: {where}: {first['msg']}") from exc
    return tick_in(tick)


def tick_in(tick: RawTick) -> TickIn:
    return TickIn(tick.record_id, tick.product_id, to_micros(tick.event_time),
                  to_micros(tick.receive_time), tick.price, tick.best_bid, tick.best_ask,
                  tick.best_bid_quantity, tick.best_ask_quantity)


@lru_cache(maxsize=1024)
def _whole_second(seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).isoformat()


def format_micros(us: int) -> str:
    """RFC 3339 UTC with microseconds and ``Z``, like :func:`cryptovol.core.schemas.format_ts`."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_whole_second(seconds)}.{micros:06d}Z"


def row_json(tick: TickIn, res: StepResult) -> bytes:
    """The :class:`~cryptovol.core.schemas.FeatureRow` of a tick, as JSON (NaN -> null).
    ``event_time`` is the time the windows used (clamped for an out-of-order tick)."""
    return orjson.dumps({
        "schema_version": FEATURE_ROW_SCHEMA_VERSION,
        "record_id": tick.record_id,
        "product_id": tick.product_id,
        "event_time": format_micros(res.time_us),
        "receive_time": format_micros(tick.receive_us),
        "warmup": res.warmup,
        "features": dict(zip(FEATURE_NAMES, res.values, strict=True)),
    })
