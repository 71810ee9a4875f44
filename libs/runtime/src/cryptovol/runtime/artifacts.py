"""Model artifacts: the contract between training and the prediction API.

An artifact is a folder ``models/artifacts/<name>/`` holding one model file and
``metadata.json``::

    models/artifacts/random_forest/
        metadata.json      ArtifactMetadata (below), written last
        model.skops        the fitted scikit-learn estimator (skops format)
    models/artifacts/baseline/
        metadata.json
        rule.json          the z-score rule (a few numbers, no code)

Which folder a service loads (``MODEL_VARIANT`` / ``MODEL_VERSION``):
``artifact_dir(models_dir, "baseline", ...)`` is ``models_dir/baseline``;
``artifact_dir(models_dir, "ml", "random_forest")`` is ``models_dir/random_forest``.

Use::

    art = load_artifact(Path("models/artifacts/logistic_regression"))  # ArtifactError if unusable
    art.contract               # cryptovol.core.scoring.ScoringContract: features, fill, threshold
    batch = art.prepare(rows)  # rows: list of {feature: value}; batch.X, batch.imputed, ...
    p = art.score(batch.X)     # float64 array of shape (n,), probabilities in [0, 1]
    flags = art.contract.flags(p)

How a row becomes the model's input (imputation, column order, checks) is
``cryptovol.core.scoring``; this module reads and writes the files.

Loading verifies the model file's SHA-256 against the metadata *before*
deserialising anything, and skops files are loaded only if every type they
reference is on an allow-list, so a tampered or foreign file is refused
instead of executed.

Formats:

- ``skops``: any scikit-learn classifier with ``predict_proba``; the score is the
  probability of the positive class.
- ``json-rule``: a rule of a few numbers (``cryptovol.core.scoring``): the z-score
  baseline ``{"kind": "zscore", "feature": F, "log": bool, "center": C,
  "scale": S, "eps": e}`` (``C`` and ``S`` each a number or ``{"feature": name}``;
  with ``x = log(value(F) + eps)`` if ``log`` else ``value(F)``, the score is
  ``Phi((x - C) / S)``; a feature used as ``C`` goes through the same log
  transform as ``F``, ``S`` is used as is), or persistence
  ``{"kind": "persistence", "feature": "persistence_ratio"}`` (``r / (1 + r)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cryptovol.core.scoring import (
    ContractError,
    PreparedBatch,
    Rule,
    ScoringContract,
    checked_scores,
    rule_from_dict,
)

METADATA_FILE = "metadata.json"
SKOPS_FILE = "model.skops"
RULE_FILE = "rule.json"
BASELINE_NAME = "baseline"
DEFAULT_MODEL_NAME = "logistic_regression"
DEFAULT_MODELS_DIR = Path("models/artifacts")
ARTIFACT_SCHEMA_VERSION = 1

Variant = Literal["ml", "baseline"]
Format = Literal["skops", "json-rule"]

# Types a skops file may reference beyond skops' own defaults. Everything else is refused.
TRUSTED_SKOPS_TYPES = frozenset({"sklearn.tree._tree.Tree"})
TRUSTED_SKOPS_PREFIXES = ("sklearn.",)


class ArtifactError(Exception):
    """An artifact folder that cannot be served (missing, corrupt, tampered, unloadable)."""


class ArtifactMetadata(BaseModel):
    """``metadata.json`` of an artifact. Unknown keys are kept (forward compatible)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    schema_version: int = ARTIFACT_SCHEMA_VERSION
    name: str = Field(description="folder name, e.g. random_forest, logistic_regression, baseline")
    version: str = Field(description="e.g. v1.0-random_forest")
    variant: Variant
    model_type: str = Field(description="e.g. RandomForestClassifier, zscore-rule")
    format: Format
    model_file: str = Field(description="file name inside the artifact folder")
    sha256: str = Field(description="hex SHA-256 of the model file")
    features: list[str] = Field(min_length=1, description="input columns, in order")
    threshold: float = Field(ge=0.0, le=1.0, description="decision threshold on the score")
    imputation: dict[str, float] = Field(
        default_factory=dict, description="value used for a feature a request omits"
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_data_fingerprint: str = ""
    created_at: datetime
    label: dict[str, Any] = Field(default_factory=dict, description="label configuration")
    git_sha: str | None = None
    description: str = ""

    @field_validator("features")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("feature names must be unique")
        return value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


def artifact_dir(models_dir: Path | str, variant: str, version: str = DEFAULT_MODEL_NAME) -> Path:
    """The folder a service loads for ``MODEL_VARIANT`` / ``MODEL_VERSION``."""
    if variant == "baseline":
        return Path(models_dir) / BASELINE_NAME
    if variant == "ml":
        if not version or "/" in version or version.startswith("."):
            raise ArtifactError(f"invalid model version {version!r}")
        return Path(models_dir) / version
    raise ArtifactError(f"unknown model variant {variant!r} (expected 'ml' or 'baseline')")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- loading ------------------------------------------------------------------------


@dataclass
class Artifact:
    """A loaded, verified artifact. ``score`` is vectorised and thread-safe for reads."""

    metadata: ArtifactMetadata
    folder: Path
    model: Any = field(repr=False)

    @property
    def model_path(self) -> Path:
        return self.folder / self.metadata.model_file

    @property
    def contract(self) -> ScoringContract:
        return self._contract

    def __post_init__(self) -> None:
        md = self.metadata
        try:
            self._contract = ScoringContract(md.features, md.imputation, md.threshold)
        except ContractError as exc:
            raise ArtifactError(f"artifact {self.folder}: {exc}") from exc

    def prepare(self, rows: Sequence[Mapping[str, Any]]) -> PreparedBatch:
        """Rows of ``{feature: value}`` as the model's input (see ``ScoringContract``)."""
        return self._contract.prepare(rows)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Probabilities in [0, 1], one per row of ``X`` (shape ``(n, len(features))``,
        already prepared); ``OutsideDomain`` for rows the model cannot score."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.metadata.features):
            raise ValueError(
                f"expected an array of shape (n, {len(self.metadata.features)}), got {X.shape}"
            )
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        if isinstance(self.model, Rule):
            scores = self.model.score(X, self.metadata.features)
        else:
            scores = self.model.predict_proba(X)[:, 1]
        return checked_scores(scores, X.shape[0])


def read_metadata(folder: Path | str) -> ArtifactMetadata:
    folder = Path(folder)
    path = folder / METADATA_FILE
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder {folder} does not exist")
    if not path.is_file():
        raise ArtifactError(f"artifact folder {folder} has no {METADATA_FILE}")
    try:
        return ArtifactMetadata.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as exc:
        raise ArtifactError(f"invalid {path}: {exc}") from exc


def _load_skops(path: Path) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [
        t for t in untrusted
        if t not in TRUSTED_SKOPS_TYPES and not t.startswith(TRUSTED_SKOPS_PREFIXES)
    ]
    if refused:
        raise ArtifactError(f"{path} references types that are not trusted: {refused}")
    model = sio.load(path, trusted=list(untrusted))
    if not hasattr(model, "predict_proba"):
        raise ArtifactError(f"{path} holds a {type(model).__name__} without predict_proba")
    return model


def load_artifact(folder: Path | str) -> Artifact:
    """Load and verify an artifact folder; raises :class:`ArtifactError` with the reason."""
    folder = Path(folder)
    metadata = read_metadata(folder)
    model_path = folder / metadata.model_file
    if Path(metadata.model_file).name != metadata.model_file:
        raise ArtifactError(f"model_file must be a plain file name, got {metadata.model_file!r}")
    if not model_path.is_file():
        raise ArtifactError(f"model file {model_path} is missing")
    actual = file_sha256(model_path)
    if actual != metadata.sha256.lower():
        raise ArtifactError(
            f"checksum mismatch for {model_path}: metadata says {metadata.sha256}, file is {actual}"
        )
    try:
        if metadata.format == "json-rule":
            model: Any = rule_from_dict(json.loads(model_path.read_text()))
            unknown = [n for n in model.inputs() if n not in metadata.features]
            if unknown:
                raise ArtifactError(f"rule uses features not listed in metadata: {unknown}")
        else:
            model = _load_skops(model_path)
            expected = getattr(model, "n_features_in_", len(metadata.features))
            if expected != len(metadata.features):
                raise ArtifactError(
                    f"model expects {expected} features, metadata lists {len(metadata.features)}"
                )
    except ArtifactError:
        raise
    except Exception as exc:  # any deserialisation failure is a bad artifact, not a crash
        raise ArtifactError(f"cannot load {model_path}: {type(exc).__name__}: {exc}") from exc
    return Artifact(metadata=metadata, folder=folder, model=model)


# --- saving ---------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; serving containers run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(
    folder: Path | str,
    model: Any,
    *,
    version: str,
    variant: Variant,
    features: Sequence[str],
    threshold: float,
    imputation: Mapping[str, float] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training_data_fingerprint: str = "",
    model_type: str | None = None,
    created_at: datetime | None = None,
    **extra: Any,
) -> ArtifactMetadata:
    """Write ``model`` (a fitted classifier, or a rule of ``cryptovol.core.scoring``) and its
    metadata into ``folder`` (created if needed; name = folder name). The model
    file is written first and the metadata last, each atomically, so a reader
    never sees metadata that points at a half-written file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, Rule):
        fmt, model_file = "json-rule", RULE_FILE
        payload = (json.dumps(model.to_dict(), indent=2, sort_keys=True) + "\n").encode()
        model_type = model_type or f"{model.kind}-rule"
    else:
        import zipfile

        import skops.io as sio

        fmt, model_file = "skops", SKOPS_FILE
        payload = sio.dumps(model, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
        model_type = model_type or type(model).__name__
    for stale in (SKOPS_FILE, RULE_FILE):
        if stale != model_file:
            (folder / stale).unlink(missing_ok=True)
    _atomic_write(folder / model_file, payload)
    metadata = ArtifactMetadata(
        name=folder.name, version=version, variant=variant, model_type=model_type,
        format=fmt, model_file=model_file, sha256=hashlib.sha256(payload).hexdigest(),
        features=list(features), threshold=float(threshold),
        imputation={k: float(v) for k, v in (imputation or {}).items()},
        metrics=dict(metrics or {}), training_data_fingerprint=training_data_fingerprint,
        created_at=created_at or datetime.now(UTC), **extra,
    )
    text = json.dumps(metadata.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
    _atomic_write(folder / METADATA_FILE, text.encode())
    return metadata
