"""MLflow: tracking of training runs and the model registry.

Tracking goes to ``MLFLOW_TRACKING_URI`` when set (e.g. ``http://mlflow:5000``),
else to a local SQLite store under ``.state/mlflow/`` (artifacts beside it).
Each artifact folder is logged under ``models/<name>/`` of the run and
registered as a version of one registered model (``volatility-detector``);
the aliases ``champion`` (the served ML model) and ``challenger`` mark the
versions to serve and to watch (aliases, not the deprecated stages).
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptovol.runtime.artifacts import ArtifactMetadata, read_metadata

log = logging.getLogger(__name__)

REGISTERED_MODEL = "volatility-detector"
EXPERIMENT = "cryptovol-volatility"
DEFAULT_STATE_DIR = Path(".state/mlflow")
CHAMPION = "champion"
CHALLENGER = "challenger"


def default_tracking_uri(state_dir: Path = DEFAULT_STATE_DIR) -> str:
    return f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"


def git_sha(cwd: Path | None = None) -> str | None:
    """The checked-out commit, with ``-dirty`` if tracked files changed; None outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


class Tracker:
    """A thin wrapper around one MLflow tracking store."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT,
                 state_dir: Path = DEFAULT_STATE_DIR) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = tracking_uri or default_tracking_uri(state_dir)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri)
        self.mlflow = mlflow
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = None
            if self.uri.startswith("sqlite:") or self.uri.startswith("file:"):
                location = (state_dir / "artifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment,
                                                               artifact_location=location)

    # --- runs ---------------------------------------------------------------------

    def start_run(self, name: str, tags: Mapping[str, str] | None = None) -> Any:
        return self.mlflow.start_run(experiment_id=self.experiment_id, run_name=name,
                                     tags=dict(tags or {}))

    def log_params(self, params: Mapping[str, Any]) -> None:
        # MLflow caps a parameter value at 6000 characters
        self.mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, int | float) and math.isfinite(v)}
        if clean:
            self.mlflow.log_metrics(clean, step=step)

    def log_json(self, data: Any, artifact_file: str) -> None:
        self.mlflow.log_text(json.dumps(data, indent=2, default=str), artifact_file)

    def log_files(self, paths: Iterable[Path], artifact_path: str) -> None:
        for path in paths:
            self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_artifact_folder(self, folder: Path) -> str:
        """Log an artifact folder under ``models/<name>`` of the active run."""
        path = f"models/{folder.name}"
        self.mlflow.log_artifacts(str(folder), artifact_path=path)
        return path

    # --- registry -----------------------------------------------------------------

    def register(
        self, run_id: str, folders: Sequence[Path], champion: str | None,
        challenger: str | None, registered_model: str = REGISTERED_MODEL,
    ) -> dict[str, str]:
        """A new model version per artifact folder (logged in run ``run_id``), then the
        aliases. Returns ``{artifact name: version}``."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(
                registered_model,
                description="Probability of a short-horizon volatility spike (cryptovol).",
            )
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(
                exc
            ):
                raise
        versions: dict[str, str] = {}
        for folder in folders:
            meta: ArtifactMetadata = read_metadata(folder)
            mv = self.client.create_model_version(
                registered_model, f"runs:/{run_id}/models/{folder.name}", run_id=run_id,
                tags={"artifact": meta.name, "version": meta.version, "variant": meta.variant,
                      "model_type": meta.model_type, "sha256": meta.sha256,
                      "threshold": f"{meta.threshold:.6g}",
                      "training_data_fingerprint": meta.training_data_fingerprint},
                description=meta.description or None,
            )
            versions[folder.name] = str(mv.version)
        for alias, name in ((CHAMPION, champion), (CHALLENGER, challenger)):
            if name and name in versions:
                self.client.set_registered_model_alias(registered_model, alias, versions[name])
        if "baseline" in versions:
            self.client.set_registered_model_alias(registered_model, "baseline",
                                                   versions["baseline"])
        log.info("registered model versions", extra={"registered_model": registered_model,
                                                     "versions": versions})
        return versions

    def alias_version(self, alias: str, registered_model: str = REGISTERED_MODEL) -> Any:
        return self.client.get_model_version_by_alias(registered_model, alias)
