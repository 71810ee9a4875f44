"""The loaded model and everything about it that is computed once at start-up.

``Scorer`` prepares a batch of feature dicts with the artifact's scoring
contract (``cryptovol.core.scoring``: column order, imputation, checks: the same
code training and ``cryptovol-train evaluate`` use) and scores the whole
batch in one call, with a compiled equivalent of the model where there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryptovol.core.scoring import OutsideDomain, PreparedBatch, checked_scores
from cryptovol.core.timestamps import format_time
from cryptovol.runtime.logs import get_logger
from cryptovol_api.fast_linear import compile_linear
from cryptovol_api.fast_trees import COMPILED_MAX_ROWS, compile_scorer, tune_for_serving
from cryptovol_api.settings import ApiSettings

log = get_logger(__name__)


class ModelLoadError(RuntimeError):
    """The configured model cannot be served; the message says why."""


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
        self.contract = artifact.contract
        self.threshold = self.contract.threshold
        self.features: tuple[str, ...] = self.contract.features
        self._fill = self.contract.fill
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
        return self.contract.prepare(rows)

    def warnings(self, prepared: PreparedBatch) -> list[str]:
        return self.contract.warnings(prepared)

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

    def score(self, X: np.ndarray) -> np.ndarray:
        """One score per row; :class:`OutsideDomain` for values the model cannot score
        (e.g. a negative volatility under a logarithm)."""
        try:
            with np.errstate(all="ignore"):
                scores = self._score(X)
        except OutsideDomain:
            raise
        except ValueError as exc:
            raise OutsideDomain(f"the model cannot score these values: {exc}") from exc
        return checked_scores(scores, X.shape[0])


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


def _load_scorer(folder: Path, scorer_cls: type[Scorer]) -> Scorer:
    from cryptovol.runtime.artifacts import load_artifact

    try:
        artifact = load_artifact(folder)
    except Exception as exc:  # checksum, missing files, unpickling: all the same to callers
        raise ModelLoadError(f"cannot load model from {folder}: {exc}") from exc
    return scorer_cls(artifact, folder)


def load_model(settings: ApiSettings, scorer_cls: type[Scorer] = Scorer) -> ModelState:
    """Load and verify the configured artifact once. Never raises: a missing or
    corrupt model yields a state with an error message the API serves as 503."""
    requested = {
        "model_variant": settings.model_variant,
        "model_version": settings.model_version,
        "models_dir": str(settings.models_dir),
    }
    try:
        scorer = _load_scorer(resolve_model_dir(settings), scorer_cls)
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


@dataclass
class Shadows:
    """The challengers scored beside the served model (``MODEL_SHADOW``), and the
    ones that could not be loaded, with the reason (the API serves without them)."""

    scorers: list[Scorer] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def load_shadows(settings: ApiSettings, served: Scorer | None,
                 scorer_cls: type[Scorer] = Scorer) -> Shadows:
    """Load every ``MODEL_SHADOW`` artifact (``baseline`` names the baseline); one
    that is the served model itself is skipped. Never raises."""
    from cryptovol.runtime.artifacts import BASELINE_NAME, ArtifactError, artifact_dir

    out = Shadows()
    for name in settings.shadow_names:
        try:
            variant = "baseline" if name == BASELINE_NAME else "ml"
            scorer = _load_scorer(artifact_dir(settings.models_dir, variant, name), scorer_cls)
        except (ArtifactError, ModelLoadError) as exc:
            out.errors[name] = str(exc)
            log.error("shadow model not loaded; serving without it",
                      extra={"shadow": name, "reason": str(exc)})
            continue
        except Exception as exc:
            out.errors[name] = f"cannot load shadow model: {exc!r}"
            log.exception("shadow model not loaded; serving without it", extra={"shadow": name})
            continue
        if served is not None and scorer.sha256 == served.sha256:
            log.warning("shadow is the served model; not scored twice", extra={"shadow": name})
            continue
        out.scorers.append(scorer)
        log.info("shadow model loaded", extra={
            "shadow": name, "model_version": scorer.version, "model_variant": scorer.variant})
    return out
