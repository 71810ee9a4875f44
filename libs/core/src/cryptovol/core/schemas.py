"""Message contracts shared by every stage of the pipeline.

Every record carries an explicit ``schema_version``, the exchange's event time,
the local receive time, the product and a stable ``record_id`` so that
at-least-once delivery can be de-duplicated downstream.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

RAW_TICK_SCHEMA_VERSION = 1
FEATURE_ROW_SCHEMA_VERSION = 1
PREDICTION_SCHEMA_VERSION = 1

#: No tick this pipeline reads is older: Coinbase's exchange opened in 2015.
EARLIEST_EVENT_TIME = datetime(2015, 1, 1, tzinfo=UTC)
#: How far the exchange's clock may run ahead of the receiving host's.
MAX_CLOCK_AHEAD = timedelta(minutes=5)
_EARLIEST_US = round(EARLIEST_EVENT_TIME.timestamp() * 1_000_000)
_AHEAD_US = MAX_CLOCK_AHEAD // timedelta(microseconds=1)


def implausible_event_time(event_us: int, receive_us: int) -> str | None:
    """Why an exchange event time cannot be right, or None. A bogus time would
    restart the product's windows twice (once on it, once on the next good tick)."""
    if event_us < _EARLIEST_US:
        return f"event_time is before {EARLIEST_EVENT_TIME:%Y-%m-%d}"
    if event_us > receive_us + _AHEAD_US:
        return (f"event_time is {(event_us - receive_us) / 1e6:.0f} s after receive_time "
                f"(at most {MAX_CLOCK_AHEAD.total_seconds():.0f} s)")
    return None


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
    SCHEMA_VERSION: ClassVar[int] = 1  # the one this code reads and writes

    @model_validator(mode="after")
    def _known_version(self) -> _Record:
        version = getattr(self, "schema_version", self.SCHEMA_VERSION)
        if version != self.SCHEMA_VERSION:
            raise ValueError(f"schema_version {version} is not supported "
                             f"(this build reads {self.SCHEMA_VERSION})")
        return self

    @field_serializer("*", when_used="json")
    def _serialize_datetimes(self, value: object) -> object:
        return format_ts(value) if isinstance(value, datetime) else value


class RawTick(_Record):
    """One ticker update from the exchange, normalised (topic ``ticks.raw``)."""

    SCHEMA_VERSION: ClassVar[int] = RAW_TICK_SCHEMA_VERSION
    schema_version: int = RAW_TICK_SCHEMA_VERSION
    record_id: str = Field(min_length=1)
    product_id: str = Field(min_length=1)
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

    @model_validator(mode="after")
    def _plausible_time(self) -> RawTick:
        why = implausible_event_time(round(epoch_seconds(self.event_time) * 1_000_000),
                                     round(epoch_seconds(self.receive_time) * 1_000_000))
        if why:
            raise ValueError(why)
        return self


class FeatureRow(_Record):
    """Windowed features of one product at one tick (topic ``ticks.features``)."""

    SCHEMA_VERSION: ClassVar[int] = FEATURE_ROW_SCHEMA_VERSION
    schema_version: int = FEATURE_ROW_SCHEMA_VERSION
    record_id: str = Field(description="record_id of the tick that produced the row")
    product_id: str
    event_time: datetime
    receive_time: datetime
    warmup: bool = Field(description="true until the product's longest window is full")
    features: dict[str, float | None]


class PredictionRecord(_Record):
    """A scored feature row (topic ``predictions.log``)."""

    SCHEMA_VERSION: ClassVar[int] = PREDICTION_SCHEMA_VERSION
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
