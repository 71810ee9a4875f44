"""Turning ``ticks.features`` messages into rows to score (pure)."""

from __future__ import annotations

import math

from pydantic import ValidationError

from cryptovol.core.schemas import FeatureRow


class MalformedRow(ValueError):
    """A message that is not a usable FeatureRow; it goes to the dead-letter topic."""


def parse_row(raw: bytes | None) -> FeatureRow:
    if not raw:
        raise MalformedRow("empty message")
    try:
        row = FeatureRow.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise MalformedRow(f"invalid feature row: {where}: {first['msg']}") from exc
    if not row.features:
        raise MalformedRow("feature row has no features")
    return row


def request_features(row: FeatureRow) -> dict[str, float | None]:
    """The row's features as the API takes them: a non-finite value (which JSON
    cannot carry) means 'unknown' and is sent as null, for the API to impute."""
    return {
        name: value if value is None or math.isfinite(value) else None
        for name, value in row.features.items()
    }
