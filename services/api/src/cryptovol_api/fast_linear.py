"""Start-up compilation of linear pipelines into a few array operations.

A served ``Pipeline`` of ``StandardScaler`` / element-wise ``FunctionTransformer``
steps ending in a binary ``LogisticRegression`` is, per row, a handful of
arithmetic operations; scikit-learn's ``predict_proba`` spends tens of
microseconds per call on input validation, step dispatch and copies. Here the
pipeline is folded once into column-wise stages (consecutive affine maps
merged into one) and the logistic link, and evaluated with plain numpy. The
result equals ``predict_proba(X)[:, 1]`` to rounding (checked at start-up,
before it is used). Anything else compiles to ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import expit

# element-wise functions a FunctionTransformer may apply (by identity, not by name)
_ELEMENTWISE: dict[Any, Callable[[np.ndarray], np.ndarray]] = {
    np.log1p: np.log1p, np.log: np.log, np.exp: np.exp, np.sqrt: np.sqrt,
}


class _Affine:
    """``x * scale + shift``, column-wise."""

    def __init__(self, scale: np.ndarray, shift: np.ndarray) -> None:
        self.scale, self.shift = scale, shift

    def then(self, other: _Affine) -> _Affine:
        return _Affine(self.scale * other.scale, self.shift * other.scale + other.shift)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return X * self.scale + self.shift


class CompiledLinear:
    """Column-wise stages, then ``expit(X @ coef + intercept)``."""

    def __init__(self, stages: list[Any], coef: np.ndarray, intercept: float) -> None:
        self.stages = stages
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        # a trailing affine stage folds into the coefficients
        if stages and isinstance(stages[-1], _Affine):
            last = stages.pop()
            self.intercept += float(last.shift @ self.coef)
            self.coef = last.scale * self.coef

    def __call__(self, X: np.ndarray) -> np.ndarray:
        for stage in self.stages:
            X = stage(X)
        return expit(X @ self.coef + self.intercept)


def _scaler(step: Any, n: int) -> _Affine | None:
    """``(x - mean) / scale``; a scaler fitted ``with_mean=False`` still stores
    ``mean_`` but does not subtract it (and ``with_std=False`` stores no scale)."""
    mean = getattr(step, "mean_", None) if getattr(step, "with_mean", True) else None
    scale = getattr(step, "scale_", None) if getattr(step, "with_std", True) else None
    if getattr(step, "with_mean", True) and mean is None:
        return None
    mean = np.zeros(n) if mean is None else np.asarray(mean, dtype=np.float64)
    scale = np.ones(n) if scale is None else np.asarray(scale, dtype=np.float64)
    return _Affine(1.0 / scale, -mean / scale)


def _stages(steps: list[Any], n: int) -> list[Any] | None:
    stages: list[Any] = []
    for step in steps:
        kind = type(step).__name__
        if kind == "StandardScaler":
            stage: Any = _scaler(step, n)
            if stage is None:
                return None
        elif kind == "FunctionTransformer":
            if step.kw_args:
                return None
            if step.func is None:
                continue  # the identity
            stage = _ELEMENTWISE.get(step.func)
            if stage is None:
                return None
        elif step == "passthrough" or step is None:
            continue
        else:
            return None
        if isinstance(stage, _Affine) and stages and isinstance(stages[-1], _Affine):
            stages[-1] = stages[-1].then(stage)
        else:
            stages.append(stage)
    return stages


def compile_linear(model: Any) -> CompiledLinear | None:
    """A compiled scorer for a binary logistic regression (alone or at the end of
    a pipeline of scalers and element-wise transforms), or None."""
    steps = [s for _, s in getattr(model, "steps", [])] or [model]
    final, head = steps[-1], steps[:-1]
    if type(final).__name__ != "LogisticRegression" or len(getattr(final, "classes_", [])) != 2:
        return None
    coef = np.asarray(final.coef_, dtype=np.float64)
    if coef.shape[0] != 1:
        return None
    stages = _stages(head, coef.shape[1])
    if stages is None:
        return None
    return CompiledLinear(stages, coef[0], float(np.asarray(final.intercept_).ravel()[0]))
