"""Message contracts shared by every stage of the pipeline (pydantic models:
validation, JSON Schema, documentation).

Every record carries an explicit ``schema_version``, the exchange's event time,
the local receive time, the product and a stable ``record_id`` so that
at-least-once delivery can be de-duplicated downstream. Times on the wire are
RFC 3339 in UTC with microseconds and ``Z``. Code passes values around, not
these models: :class:`~cryptovol.core.ticks.Tick` for ticks; the encoders and
decoders between the two are in :mod:`cryptovol.core.codec`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from cryptovol.core.timestamps import format_time

RAW_TICK_SCHEMA_VERSION = 1
FEATURE_ROW_SCHEMA_VERSION = 1
PREDICTION_SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_serializer("*", when_used="json")
    def _serialize_datetimes(self, value: object) -> object:
        return format_time(value) if isinstance(value, datetime) else value


class RawTick(_Record):
    """One ticker update from the exchange, normalised (topic ``ticks.raw``); the
    message of a :class:`~cryptovol.core.ticks.Tick`."""

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
