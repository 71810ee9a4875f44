"""Fast JSON encoding of :class:`RawTick` for the hot path.

Byte-for-byte the same as :func:`cryptovol.schemas.to_json_bytes` (a unit test holds
them together over every recorded tick), about three times cheaper: pydantic's
per-field serializer hook and ``strftime`` dominate the generic path.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from cryptovol.schemas import RawTick, format_ts


def _ts(value: datetime) -> str:
    if value.tzinfo is UTC:
        return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return format_ts(value)


def tick_json(tick: RawTick) -> bytes:
    fields = dict(tick.__dict__)
    fields["event_time"] = _ts(tick.event_time)
    fields["receive_time"] = _ts(tick.receive_time)
    return orjson.dumps(fields)
