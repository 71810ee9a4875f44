"""The loaded model and everything about it that is computed once at start-up.

``Scorer`` turns a batch of feature dicts into one matrix in the model's own
feature order, imputes missing values from the artifact's stored imputation
values, and scores the whole batch in one call.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryptovol.core.timestamps import format_time
from cryptovol.runtime.logs import get_logger
from cryptovol_api.fast_linear import compile_linear
from cryptovol_api.fast_trees import COMPILED_MAX_ROWS, compile_scorer, tune_for_serving
from cryptovol_api.settings import ApiSettings

log = get_logger(__name__)


class ModelLoadError(RuntimeError):
    """The configured model cannot be served; the message says why."""


class OutsideDomain(ValueError):
    """Feature values the model cannot score; the message names the rows."""


@dataclass(frozen=True)
class PreparedBatch:
    X: np.ndarray
    imputed: list[list[str]]  # per row, the features filled from imputation values
    ignored: list[str]  # fields no row needs (not model features), sorted
    without_inputs: list[int] = field(default_factory=list)  # rows with every feature imputed

    @property
    def n_without_inputs(self) -> int:
        return len(self.without_inputs)


class Scorer:
    """A verified artifact plus its precomputed feature index and fill vector."""

    def __init__(self, artifact: Any, path: Path) -> None:
        md = artifact.metadata
        self.artifact = artifact
        self.path = path
        self.name = str(md.name)
        self.version = str(md.version)
        self.variant = str(md.variant)
        self.model_type = str(md.model_type)
        self.sha256 = str(md.sha256)
        self.threshold = float(md.threshold)
        self.features: tuple[str, ...] = tuple(md.features)
        if not self.features:
            raise ModelLoadError(f"model at {path} lists no features")
        if not np.isfinite(self.threshold):
            raise ModelLoadError(f"model at {path} has a non-finite threshold")
        # Same rule as ``cryptovol.runtime.artifacts.Artifact.matrix``: the stored value,
        # or 0.0 for a feature the artifact stores none for.
        imputation = dict(md.imputation or {})
        self._fill = np.asarray([float(imputation.get(f, 0.0)) for f in self.features], float)
        if not np.isfinite(self._fill).all():
            raise ModelLoadError(f"model at {path} has non-finite imputation values")
        self._feature_set = frozenset(self.features)
        getter = operator.itemgetter(*self.features)
        # itemgetter of one name returns a bare value, not a tuple
        self._pick = getter if len(self.features) > 1 else lambda row: (getter(row),)
        self._score = self._fastest_scorer(artifact)
        created = md.created_at
        self.trained_at = format_time(created) if hasattr(created, "tzinfo") else str(created)

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "model_variant": self.variant,
            "model_type": self.model_type,
            "model_path": str(self.path),
            "sha256": self.sha256,
            "trained_at": self.trained_at,
            "threshold": self.threshold,
            "features": list(self.features),
            "imputation": dict(zip(self.features, self._fill.tolist(), strict=True)),
        }

    def prepare(self, rows: list[dict[str, float | None]]) -> PreparedBatch:
        feats = self.features
        # None (and absent keys) become NaN, then take the stored fill value.
        X = np.array([self._values(row) for row in rows], dtype=float)
        missing = np.isnan(X)
        imputed: list[list[str]]
        if missing.any():
            X = np.where(missing, self._fill, X)
            imputed = []
            by_mask: dict[bytes, list[str]] = {}
            empty: list[str] = []
            for r, has_missing in enumerate(missing.any(axis=1).tolist()):
                if not has_missing:
                    imputed.append(empty)
                    continue
                key = missing[r].tobytes()
                names = by_mask.get(key)
                if names is None:
                    names = by_mask[key] = [feats[c] for c in np.flatnonzero(missing[r])]
                imputed.append(names)
        else:
            imputed = [[] for _ in rows]
        ignored = sorted(set().union(*rows) - self._feature_set)
        n_features = len(feats)
        without = [i for i, names in enumerate(imputed) if len(names) == n_features]
        return PreparedBatch(X=X, imputed=imputed, ignored=ignored, without_inputs=without)

    def warnings(self, prepared: PreparedBatch) -> list[str]:
        """What a caller must know about the scores of this batch (empty when nothing)."""
        if not prepared.without_inputs:
            return []
        rows = prepared.without_inputs
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        return [
            f"{len(rows)} of {len(prepared.imputed)} rows (row {shown}) carry none of the "
            f"model's features ({', '.join(self.features)}): each scores as a typical row "
            "(every feature imputed), not as itself. The original minimal row "
            "(ret_mean, ret_std, n over 60 s) cannot give them: they are relative to the last "
            "30 minutes of the market. Send the feature row the featurizer emits "
            "(docs/api.md)."
        ]

    def _fastest_scorer(self, artifact: Any) -> Callable[[np.ndarray], np.ndarray]:
        """``artifact.score``, or a compiled equivalent checked against it here: a
        linear pipeline as a few array operations, a forest as one node table."""
        model = getattr(artifact, "model", None)
        tune_for_serving(model)
        linear = compile_linear(model)
        if linear is not None:
            if self._agrees(artifact, linear, "compiled linear model"):
                log.info("scoring with the compiled linear model",
                         extra={"stages": len(linear.stages)})
                return lambda X: np.clip(linear(X), 0.0, 1.0)
            return artifact.score
        compiled = compile_scorer(model)
        if compiled is None or not self._agrees(artifact, compiled, "compiled forest"):
            return artifact.score
        log.info("scoring with the compiled forest", extra={"trees": compiled.n_trees})

        def score(X: np.ndarray) -> np.ndarray:
            if X.shape[0] > COMPILED_MAX_ROWS:
                return artifact.score(X)
            return np.clip(compiled(X), 0.0, 1.0)

        return score

    def _agrees(self, artifact: Any, compiled: Callable[[np.ndarray], np.ndarray],
                what: str) -> bool:
        probe = self._probe_matrix()
        try:
            expected = artifact.score(probe)
        except ValueError:  # e.g. a log of a negative value: probe inside the domain
            probe = np.abs(probe)
            expected = artifact.score(probe)
        with np.errstate(all="ignore"):
            got = np.clip(compiled(probe), 0.0, 1.0)
        if np.allclose(got, expected, rtol=0, atol=1e-9, equal_nan=True):
            return True
        log.warning(f"{what} disagrees with the model; using the model itself")
        return False

    def _probe_matrix(self, n: int = 512) -> np.ndarray:
        """Rows around the imputation values, spread over several orders of magnitude."""
        rng = np.random.default_rng(0)
        scale = np.where(self._fill == 0.0, 1.0, np.abs(self._fill))
        spread = rng.lognormal(0.0, 1.5, size=(n, len(self.features)))
        signs = rng.choice([-1.0, 1.0], size=(n, len(self.features)))
        return np.vstack([self._fill, self._fill + signs * spread * scale * 0.5])

    def _values(self, row: dict[str, float | None]) -> tuple | list:
        try:
            return self._pick(row)  # every feature present: one C-level call
        except KeyError:
            return [row.get(f) for f in self.features]

    def score(self, X: np.ndarray) -> np.ndarray:
        """One score per row; :class:`OutsideDomain` for values the model cannot score
        (e.g. a negative volatility under a logarithm)."""
        try:
            with np.errstate(all="ignore"):
                scores = np.asarray(self._score(X), dtype=float).reshape(-1)
        except ValueError as exc:
            raise OutsideDomain(f"the model cannot score these values: {exc}") from exc
        if scores.shape[0] != X.shape[0]:
            raise RuntimeError(f"model returned {scores.shape[0]} scores for {X.shape[0]} rows")
        bad = np.flatnonzero(~np.isfinite(scores))
        if len(bad):
            shown = ", ".join(map(str, bad[:10].tolist())) + (", ..." if len(bad) > 10 else "")
            raise OutsideDomain(f"rows {shown}: values outside the model's domain "
                                "(volatilities and counts cannot be negative)")
        return scores


@dataclass
class ModelState:
    """What the API serves: a scorer, or the reason there is none."""

    scorer: Scorer | None
    error: str | None = None
    requested: dict[str, str] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.scorer is not None


def resolve_model_dir(settings: ApiSettings) -> Path:
    from cryptovol.runtime.artifacts import ArtifactError, artifact_dir

    variant = settings.model_variant.strip().lower()
    try:
        return artifact_dir(settings.models_dir, variant, settings.model_version.strip())
    except ArtifactError as exc:
        raise ModelLoadError(
            f"MODEL_VARIANT={settings.model_variant!r} / MODEL_VERSION="
            f"{settings.model_version!r} do not name a model: {exc}"
        ) from exc


def load_model(settings: ApiSettings, scorer_cls: type[Scorer] = Scorer) -> ModelState:
    """Load and verify the configured artifact once. Never raises: a missing or
    corrupt model yields a state with an error message the API serves as 503."""
    requested = {
        "model_variant": settings.model_variant,
        "model_version": settings.model_version,
        "models_dir": str(settings.models_dir),
    }
    try:
        folder = resolve_model_dir(settings)
        from cryptovol.runtime.artifacts import load_artifact

        try:
            artifact = load_artifact(folder)
        except Exception as exc:  # checksum, missing files, unpickling: all the same to callers
            raise ModelLoadError(f"cannot load model from {folder}: {exc}") from exc
        scorer = scorer_cls(artifact, folder)
    except ModelLoadError as exc:
        log.error("model not loaded; /predict answers 503", extra={"reason": str(exc)})
        return ModelState(scorer=None, error=str(exc), requested=requested)
    except Exception as exc:
        log.exception("model not loaded; /predict answers 503")
        return ModelState(scorer=None, error=f"cannot load model: {exc!r}", requested=requested)
    if scorer.variant != settings.model_variant.strip().lower():
        log.warning(
            "artifact variant differs from MODEL_VARIANT",
            extra={"artifact_variant": scorer.variant, "model_variant": settings.model_variant},
        )
    log.info(
        "model loaded",
        extra={k: v for k, v in scorer.describe().items() if k not in ("features", "imputation")},
    )
    return ModelState(scorer=scorer, requested=requested)
