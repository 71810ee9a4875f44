"""Request and response bodies of the API (validation and the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# A feature value: a finite JSON number, or null for "missing, impute it".
# Strict: strings and booleans are wrong types, not numbers in disguise. The
# bound keeps every value representable where models compute in float32
# (scikit-learn trees) and keeps linear models from overflowing.
MAX_ABS_VALUE = 1e30
FeatureValue = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)
]


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"rows": [{"ret_mean": 0.05, "ret_std": 0.01, "n": 50}]}]},
    )

    rows: list[dict[str, FeatureValue | None]] = Field(
        min_length=1,
        description=(
            "Feature rows. Each row maps feature names to finite numbers within "
            "±1e30 (or null). "
            "Model features that are absent or null are imputed; other names are ignored "
            "and listed in `ignored_fields`."
        ),
    )
    event_times: list[AwareDatetime] | None = Field(
        None,
        description="Optional exchange event time of each row (same length as rows); "
        "feeds the feature-age metric.",
    )


class ShadowScores(BaseModel):
    """A challenger's scores of the same rows: recorded and graded, never the answer."""

    model_name: str
    model_variant: str
    version: str
    threshold: float
    scores: list[float]
    spikes: list[bool]


class PredictResponse(BaseModel):
    scores: list[float] = Field(description="spike probability per row, in [0, 1]")
    spikes: list[bool] = Field(description="score >= threshold, per row")
    threshold: float = Field(description="the loaded model's own decision threshold")
    model_variant: str
    model_name: str
    version: str = Field(description="model version")
    ts: str = Field(description="response time, RFC 3339 UTC")
    imputed: list[list[str]] = Field(description="per row, the features filled by imputation")
    ignored_fields: list[str] = Field(description="fields that are not features of the model")
    warnings: list[str] = Field(
        default_factory=list,
        description="what the caller should know about these scores, e.g. rows that carry "
        "none of the model's inputs (an original client's minimal row) and so score as a "
        "typical row, not as themselves",
    )
    shadows: list[ShadowScores] = Field(
        default_factory=list,
        description="challengers scored on the same rows (MODEL_SHADOW); they never change "
        "`scores` or `spikes`",
    )


class StatusResponse(BaseModel):
    status: str = Field(description="alive / ready / not ready")
    error: str | None = Field(None, description="why the API is not ready")


class ErrorResponse(BaseModel):
    error: str = Field(
        description="reason: validation, too_many_rows, body_too_large, content_type, "
        "model_unavailable, internal"
    )
    detail: Any = Field(description="a message, or a list of {loc, msg, type} for validation")


class HealthResponse(BaseModel):
    status: str = Field(description="ok, or degraded when no model is loaded")
    model_loaded: bool
    kafka_connected: bool
    kafka_checked_at: str | None
    model_variant: str | None
    model_version: str | None
    shadow_versions: list[str] = Field(
        default_factory=list, description="challengers scored beside the model")
    error: str | None = None


class VersionResponse(BaseModel):
    api_version: str
    git_sha: str
    model_loaded: bool
    model_name: str | None = None
    model_version: str | None = None
    model_variant: str | None = None
    model_type: str | None = None
    model_path: str | None = None
    sha256: str | None = None
    trained_at: str | None = None
    threshold: float | None = None
    features: list[str] | None = None
    imputation: dict[str, float] | None = None
    shadows: list[dict[str, Any]] = Field(
        default_factory=list, description="challengers scored beside the model (MODEL_SHADOW)")
    shadow_errors: dict[str, str] = Field(
        default_factory=dict, description="MODEL_SHADOW artifacts that could not be loaded")
    error: str | None = None
