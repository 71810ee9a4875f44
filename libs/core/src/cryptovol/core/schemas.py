"""Message contracts shared by every stage of the pipeline.

Every record carries an explicit ``schema_version``, the exchange's event time,
the local receive time, the product and a stable ``record_id`` so that
at-least-once delivery can be de-duplicated downstream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_serializer

RAW_TICK_SCHEMA_VERSION = 1
FEATURE_ROW_SCHEMA_VERSION = 1
PREDICTION_SCHEMA_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_ts(dt: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z`` suffix."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_seconds(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def tick_record_id(product_id: str, event_time: datetime, index: int = 0) -> str:
    """Stable id of a tick: product, exchange event time in microseconds, and the
    position of the ticker inside its exchange message (several tickers can share
    one envelope timestamp)."""
    micros = round(epoch_seconds(event_time) * 1_000_000)
    return f"{product_id}:{micros}:{index}"


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_serializer("*", when_used="json")
    def _serialize_datetimes(self, value: object) -> object:
        return format_ts(value) if isinstance(value, datetime) else value


class RawTick(_Record):
    """One ticker update from the exchange, normalised (topic ``ticks.raw``)."""

    schema_version: int = RAW_TICK_SCHEMA_VERSION
    record_id: str
    product_id: str
    event_time: datetime = Field(description="exchange envelope timestamp (UTC)")
    receive_time: datetime = Field(description="local receive time (UTC)")
    sequence_num: int | None = Field(None, description="exchange per-connection counter")
    event_type: Literal["snapshot", "update"] = "update"
    source: Literal["live", "replay", "fake"] = "live"
    price: float
    best_bid: float | None = None
    best_ask: float | None = None
    best_bid_quantity: float | None = None
    best_ask_quantity: float | None = None
    volume_24h: float | None = None
    low_24h: float | None = None
    high_24h: float | None = None
    price_percent_chg_24h: float | None = None


class FeatureRow(_Record):
    """Windowed features of one product at one tick (topic ``ticks.features``)."""

    schema_version: int = FEATURE_ROW_SCHEMA_VERSION
    record_id: str = Field(description="record_id of the tick that produced the row")
    product_id: str
    event_time: datetime
    receive_time: datetime
    warmup: bool = Field(description="true until the product's longest window is full")
    features: dict[str, float | None]


class PredictionRecord(_Record):
    """A scored feature row (topic ``predictions.log``)."""

    schema_version: int = PREDICTION_SCHEMA_VERSION
    record_id: str
    product_id: str
    event_time: datetime
    predicted_time: datetime
    score: float
    spike: bool
    threshold: float
    model_variant: Literal["ml", "baseline"]
    model_version: str
    api_latency_ms: float
    e2e_latency_ms: float


def to_json_bytes(record: BaseModel | dict) -> bytes:
    if isinstance(record, BaseModel):
        return record.model_dump_json().encode()
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
