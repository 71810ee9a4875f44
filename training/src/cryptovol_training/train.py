"""Training: dataset -> walk-forward evaluation -> final models -> artifacts -> MLflow.

The served models are fitted on all labelled rows but the last
``valid_fraction`` (purged), and their thresholds are chosen on that last,
most recent slice. The walk-forward table is their out-of-time evidence.
The champion among the learned models is the one with the best pooled
*validation* PR-AUC (the test blocks choose nothing); it earns the ``ml``
variant only if its out-of-time PR-AUC beats persistence by the required
factor (recorded as ``earns_ml`` in its metadata).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cryptovol.core.labels import LabelConfig
from cryptovol.runtime.artifacts import ArtifactMetadata, save_artifact
from cryptovol_training import plots
from cryptovol_training.dataset import FEATURES, Dataset, RowPolicy, build_dataset, matrix
from cryptovol_training.metrics import binary_metrics, choose_threshold
from cryptovol_training.models import (
    DEFAULT_MODELS,
    MODEL_SPECS,
    PERSISTENCE,
    ZSCORE,
    fit_model,
    fit_zscore,
    imputation_values,
    impute,
)
from cryptovol_training.splits import SplitConfig, final_split, walk_forward
from cryptovol_training.tracking import Tracker, git_sha
from cryptovol_training.walkforward import WalkForwardResult, run_walk_forward

log = logging.getLogger(__name__)

REPORT_FILE = "walk_forward.json"
TARGET_LIFT_PREVALENCE = 2.2
TARGET_LIFT_PERSISTENCE = 1.15


@dataclass
class TrainConfig:
    data: list[Path] = field(default_factory=lambda: [Path("data/coinbase-ticker")])
    out: Path = Path("models/artifacts")
    models: tuple[str, ...] = DEFAULT_MODELS
    label: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    policy: RowPolicy = field(default_factory=RowPolicy)
    seed: int = 0
    version: str = "v1.0"
    track: bool = True
    register: bool = True
    tracking_uri: str | None = None
    state_dir: Path = Path(".state/mlflow")
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_SPECS]
        if unknown:
            raise ValueError(f"unknown models {unknown}; known: {sorted(MODEL_SPECS)}")


@dataclass
class TrainResult:
    dataset: dict[str, Any]
    walk_forward: WalkForwardResult
    champion: str | None
    challenger: str | None
    artifacts: dict[str, ArtifactMetadata]
    report: dict[str, Any]
    run_id: str | None = None
    registered: dict[str, str] = field(default_factory=dict)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def pick_champion(wf: WalkForwardResult, models: Sequence[str]) -> tuple[str | None, str | None]:
    """Best and second-best learned model by pooled validation PR-AUC."""
    ranked = sorted(
        (m for m in models if m in wf.models),
        key=lambda m: -(wf.models[m].validation_overall.get("pr_auc") or -1.0)
        if math.isfinite(wf.models[m].validation_overall.get("pr_auc", math.nan)) else 1.0,
    )
    return (ranked[0] if ranked else None, ranked[1] if len(ranked) > 1 else None)


def earns_ml(wf: WalkForwardResult, name: str) -> dict[str, Any]:
    overall = wf.models[name].overall
    persistence = wf.models[PERSISTENCE].overall.get("pr_auc", math.nan)
    pr_auc = overall.get("pr_auc", math.nan)
    prevalence = overall.get("prevalence", math.nan)
    vs_prev = pr_auc / prevalence if prevalence else math.nan
    vs_pers = pr_auc / persistence if persistence else math.nan
    return {
        "pr_auc": pr_auc, "prevalence": prevalence, "persistence_pr_auc": persistence,
        "lift_over_prevalence": vs_prev, "lift_over_persistence": vs_pers,
        "target_lift_over_prevalence": TARGET_LIFT_PREVALENCE,
        "target_lift_over_persistence": TARGET_LIFT_PERSISTENCE,
        "earns_ml": bool(vs_prev >= TARGET_LIFT_PREVALENCE and vs_pers >= TARGET_LIFT_PERSISTENCE),
        "beats_persistence": bool(vs_pers > 1.0),
    }


def build_report(cfg: TrainConfig, ds: Dataset, wf: WalkForwardResult,
                 champion: str | None, challenger: str | None) -> dict[str, Any]:
    ml = [m for m in cfg.models if m in wf.models]
    return _clean({
        "created_at": datetime.now(UTC).isoformat(),
        "git_sha": git_sha(),
        "dataset": ds.summary(),
        "files": [Path(f).name for f in ds.files],
        "label": cfg.label.to_dict(),
        "row_policy": asdict(cfg.policy),
        "split": cfg.split.to_dict(),
        "seed": cfg.seed,
        "features": list(FEATURES),
        "model_features": {m: list(MODEL_SPECS[m].features) for m in cfg.models},
        "folds": wf.folds,
        "models": {
            name: {"overall": ev.overall, "folds": ev.folds,
                   "validation_overall": ev.validation_overall}
            for name, ev in wf.models.items()
        },
        "champion": champion,
        "challenger": challenger,
        "acceptance": {name: earns_ml(wf, name) for name in [*ml, ZSCORE]},
    })


def _fit_final(cfg: TrainConfig, ds: Dataset, report: dict[str, Any], out: Path,
               champion: str | None) -> dict[str, ArtifactMetadata]:
    eval_rows, train_rows = ds.eval_rows, ds.train_rows
    fit, valid = final_split(eval_rows["ts"].to_numpy(), cfg.split, cfg.label.horizon_s,
                             train_rows["ts"].to_numpy())
    X_train_raw = matrix(train_rows, FEATURES)
    y_train = train_rows["train_spike"].to_numpy(dtype=np.int64)
    fill = imputation_values(X_train_raw[fit], FEATURES)
    X_train = impute(X_train_raw, FEATURES, fill)
    X_valid = impute(matrix(eval_rows, FEATURES), FEATURES, fill)[valid]
    y_valid = eval_rows["spike"].to_numpy(dtype=np.int64)[valid]
    column = {f: j for j, f in enumerate(FEATURES)}
    common = {
        "training_data_fingerprint": ds.fingerprint,
        "label": cfg.label.to_dict(),
        "row_policy": asdict(cfg.policy),
        "git_sha": report.get("git_sha"),
        "dataset": report["dataset"],
        "split": cfg.split.to_dict(),
        "seed": cfg.seed,
        "fit_rows": len(fit),
        "validation_rows": len(valid),
        "fit_end": _iso_ts(train_rows["ts"].to_numpy()[fit]),
    }
    written: dict[str, ArtifactMetadata] = {}
    for name in [*cfg.models, ZSCORE]:
        if name == ZSCORE:
            model: Any = fit_zscore(X_train_raw[fit], FEATURES)
            features = model.inputs()
            cols = [column[f] for f in features]
            valid_p = model.score(X_valid[:, cols], features)
            variant, description = "baseline", (
                "z-score rule: Phi((log vol_ratio_60_300 - mu) / sigma), mu and sigma from the "
                "fitting rows")
        else:
            features = list(MODEL_SPECS[name].features)
            cols = [column[f] for f in features]
            model = fit_model(name, X_train[np.ix_(fit, cols)], y_train[fit], cfg.seed)
            valid_p = model.predict_proba(X_valid[:, cols])[:, 1]
            variant, description = "ml", MODEL_SPECS[name].description
        threshold = choose_threshold(y_valid, valid_p)
        metrics = {
            "validation": binary_metrics(y_valid, valid_p, threshold),
            "walk_forward": report["models"][name]["overall"],
            "walk_forward_folds": report["models"][name]["folds"],
            "persistence_walk_forward": report["models"][PERSISTENCE]["overall"],
            "acceptance": report["acceptance"][name],
        }
        written[name] = save_artifact(
            out / name, model, version=f"{cfg.version}-{name}", variant=variant,
            features=features, threshold=threshold, metrics=_clean(metrics),
            imputation={f: fill[f] for f in features}, description=description,
            champion=(name == champion), **common,
        )
    return written


def _iso_ts(ts: np.ndarray) -> str | None:
    if not len(ts):
        return None
    return datetime.fromtimestamp(float(ts.max()), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _track(cfg: TrainConfig, result: TrainResult, plot_files: list[Path]) -> None:
    tracker = Tracker(cfg.tracking_uri, state_dir=cfg.state_dir)
    report = result.report
    tags = {"git_sha": str(report.get("git_sha")), "champion": str(result.champion),
            "training_data_fingerprint": result.dataset["fingerprint"]}
    with tracker.start_run("train", tags=tags) as run:
        tracker.log_params({
            **{f"label.{k}": v for k, v in cfg.label.to_dict().items()},
            **{f"rows.{k}": v for k, v in asdict(cfg.policy).items()},
            **{f"split.{k}": v for k, v in cfg.split.to_dict().items()},
            "seed": cfg.seed, "models": ",".join(cfg.models), "version": cfg.version,
            "features": ",".join(FEATURES), "n_features": len(FEATURES),
            "dataset.fingerprint": result.dataset["fingerprint"],
            "dataset.rows": result.dataset["rows"], "dataset.files": result.dataset["files"],
            "dataset.train_rows": result.dataset["train_rows"],
            "git_sha": report.get("git_sha"), "champion": result.champion,
            "challenger": result.challenger,
            **{f"model.{m}": MODEL_SPECS[m].description for m in cfg.models},
        })
        for name, ev in result.walk_forward.models.items():
            for fold in ev.folds:
                tracker.log_metrics({f"{name}.fold.{k}": v for k, v in fold.items()
                                     if k != "fold"}, step=int(fold["fold"]))
            tracker.log_metrics({f"{name}.overall.{k}": v for k, v in ev.overall.items()})
            tracker.log_metrics({f"{name}.validation.{k}": v
                                 for k, v in ev.validation_overall.items()})
        for name, meta in result.artifacts.items():
            tracker.log_metrics({f"{name}.final_validation.{k}": v
                                 for k, v in meta.metrics["validation"].items()
                                 if isinstance(v, int | float)})
        tracker.log_json(report, "walk_forward.json")
        tracker.log_json(list(FEATURES), "features.json")
        tracker.log_files(plot_files, "plots")
        folders = [cfg.out / name for name in result.artifacts]
        for folder in folders:
            tracker.log_artifact_folder(folder)
        result.run_id = run.info.run_id
        if cfg.register:
            result.registered = tracker.register(run.info.run_id, folders, result.champion,
                                                 result.challenger)


def train(cfg: TrainConfig) -> TrainResult:
    ds = build_dataset(cfg.data, cfg.label, progress=cfg.progress, policy=cfg.policy)
    eval_rows, train_rows = ds.eval_rows, ds.train_rows
    summary = ds.summary()
    log.info("dataset built", extra={"dataset": summary})
    if len(eval_rows) < 100 or eval_rows["spike"].sum() == 0:
        raise ValueError(f"not enough labelled rows to train: {summary}")
    folds = walk_forward(eval_rows["ts"].to_numpy(), cfg.split, cfg.label.horizon_s,
                         train_rows["ts"].to_numpy())
    wf = run_walk_forward(eval_rows, train_rows, folds, cfg.models, seed=cfg.seed,
                          progress=cfg.progress)
    champion, challenger = pick_champion(wf, cfg.models)
    report = build_report(cfg, ds, wf, champion, challenger)
    cfg.out.mkdir(parents=True, exist_ok=True)
    artifacts = _fit_final(cfg, ds, report, cfg.out, champion)
    (cfg.out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    result = TrainResult(summary, wf, champion, challenger, artifacts, report)
    if cfg.track:
        with tempfile.TemporaryDirectory() as tmp:
            importance = {m: wf.models[m].importance for m in cfg.models}
            files = plots.all_plots(wf.predictions, [*cfg.models, ZSCORE, PERSISTENCE],
                                    importance, Path(tmp))
            _track(cfg, result, files)
    return result


def markdown_table(report: dict[str, Any]) -> str:
    """The walk-forward table (per fold and overall) as Markdown."""
    cols = ("n", "prevalence", "pr_auc", "roc_auc", "precision", "recall", "f1", "brier",
            "threshold")

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    lines = ["| model | fold | " + " | ".join(cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for name, data in report["models"].items():
        for fold in data["folds"]:
            lines.append(f"| {name} | {fold['fold']} | "
                         + " | ".join(fmt(fold.get(c)) for c in cols) + " |")
        overall = data["overall"]
        lines.append(f"| **{name}** | **all** | "
                     + " | ".join(fmt(overall.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    out = asdict(cfg)
    return _clean({k: str(v) if isinstance(v, Path) else v for k, v in out.items()})
