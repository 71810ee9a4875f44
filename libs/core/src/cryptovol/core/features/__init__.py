"""Windowed features of a tick stream, computed incrementally (pure, no I/O).

The streaming featurizer and the offline dataset builder both use
:class:`FeatureEngine`, so training and serving see identical features.
See docs/features.md for every feature's formula, window and warm-up rule.
"""

from cryptovol.core.features.config import FeatureConfig
from cryptovol.core.features.context import CONTEXT_S
from cryptovol.core.features.engine import FeatureEngine, StepResult
from cryptovol.core.features.frame import FRAME_COLUMNS, features_frame
from cryptovol.core.features.names import (
    CONTEXT_FEATURES,
    FEATURE_NAMES,
    LONGEST_WINDOW_S,
    RET_WINDOW_S,
    WINDOWS_S,
)

__all__ = [
    "CONTEXT_FEATURES",
    "CONTEXT_S",
    "FEATURE_NAMES",
    "FRAME_COLUMNS",
    "LONGEST_WINDOW_S",
    "RET_WINDOW_S",
    "WINDOWS_S",
    "FeatureConfig",
    "FeatureEngine",
    "StepResult",
    "features_frame",
]
