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
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from cryptovol.core.ticks import implausible_event_time
from cryptovol.core.timestamps import format_time, to_micros

RAW_TICK_SCHEMA_VERSION = 1
FEATURE_ROW_SCHEMA_VERSION = 1
PREDICTION_SCHEMA_VERSION = 1
LABELLED_SCHEMA_VERSION = 1

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
        return format_time(value) if isinstance(value, datetime) else value


class RawTick(_Record):
    """One ticker update from the exchange, normalised (topic ``ticks.raw``); the
    message of a :class:`~cryptovol.core.ticks.Tick`."""

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
        why = implausible_event_time(to_micros(self.event_time), to_micros(self.receive_time))
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


class ShadowScore(_Record):
    """A challenger's score of the same row (``MODEL_SHADOW``): recorded and graded,
    never the answer."""

    model_variant: Literal["ml", "baseline"]
    model_version: str
    score: float
    spike: bool
    threshold: float


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
    shadows: list[ShadowScore] = Field(
        default_factory=list, description="challengers scored on the same row (MODEL_SHADOW)")


class GradedScore(_Record):
    """One scorer's score of a labelled row."""

    role: Literal["served", "shadow", "reference"] = Field(
        description="served: the API's answer; shadow: a challenger; reference: persistence")
    model_variant: str = Field(description="ml, baseline, or reference (persistence)")
    model_version: str
    score: float
    threshold: float
    flagged: bool = Field(description="score >= threshold")


class LabelledPrediction(_Record):
    """A prediction with its realized label (topic ``predictions.labelled``): one
    record per prediction, labelled or, with the reason, not."""

    schema_version: int = LABELLED_SCHEMA_VERSION
    record_id: str
    product_id: str
    event_time: datetime = Field(description="the row's time (the label's t)")
    predicted_time: datetime
    graded_time: datetime
    has_label: bool
    reason: str = Field(
        "", description="why there is no label: cut, no_history, no_past, no_tick")
    spike: bool | None = Field(None, description="the realized label: RV_fwd >= tau")
    rv_fwd: float | None = None
    tau: float | None = None
    rv_past: float | None = None
    scores: list[GradedScore] = Field(
        default_factory=list, description="served model, shadows, persistence (same row)")
