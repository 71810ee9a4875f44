"""Register existing artifact folders in the MLflow model registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptovol.runtime.artifacts import DEFAULT_MODEL_NAME, load_artifact
from cryptovol_training.evaluate import find_artifacts
from cryptovol_training.tracking import Tracker


def default_aliases(folders: Sequence[Path]) -> tuple[str | None, str | None]:
    """Champion: the artifact marked ``champion`` at training (the served one; else the
    default model);
    challenger: the best other learned model by its walk-forward PR-AUC."""
    metas = {f.name: load_artifact(f).metadata for f in folders}
    ml = {n: m for n, m in metas.items() if m.variant == "ml"}
    marked = [n for n, m in ml.items() if getattr(m, "champion", False)]
    champion = marked[0] if marked else (DEFAULT_MODEL_NAME if DEFAULT_MODEL_NAME in ml else None)
    others = sorted(
        (n for n in ml if n != champion),
        key=lambda n: -((ml[n].metrics.get("walk_forward") or {}).get("pr_auc") or 0.0),
    )
    return champion, (others[0] if others else None)


def register_existing(
    models_dir: Path, tracker: Tracker, champion: str | None = None,
    challenger: str | None = None,
) -> dict[str, str]:
    """Log every artifact under ``models_dir`` in a new run and register each as a
    model version (checksums are verified first: a broken artifact is refused)."""
    folders = find_artifacts(models_dir)
    if not folders:
        raise FileNotFoundError(f"no artifacts under {models_dir}")
    default_champion, default_challenger = default_aliases(folders)
    champion = champion or default_champion
    challenger = challenger or default_challenger
    with tracker.start_run("register", tags={"source": str(models_dir)}) as run:
        for folder in folders:
            meta = load_artifact(folder).metadata
            tracker.log_params({f"{meta.name}.version": meta.version,
                                f"{meta.name}.sha256": meta.sha256,
                                f"{meta.name}.threshold": meta.threshold,
                                f"{meta.name}.fingerprint": meta.training_data_fingerprint})
            overall = meta.metrics.get("walk_forward") or {}
            tracker.log_metrics({f"{meta.name}.walk_forward.{k}": v
                                 for k, v in overall.items() if isinstance(v, int | float)})
            tracker.log_artifact_folder(folder)
        return tracker.register(run.info.run_id, folders, champion, challenger)
