"""Feature rows as the prediction API takes them (pure)."""

from __future__ import annotations

import math

from cryptovol.core.schemas import FeatureRow


def request_features(row: FeatureRow) -> dict[str, float | None]:
    """The row's features as the API takes them: a non-finite value (which JSON
    cannot carry) means 'unknown' and is sent as null, for the API to impute."""
    return {
        name: value if value is None or math.isfinite(value) else None
        for name, value in row.features.items()
    }
