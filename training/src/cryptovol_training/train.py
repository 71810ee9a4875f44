"""Training: dataset -> walk-forward -> choice -> final fit -> locked final test -> artifacts.

The protocol (docs/model_card.md):

1. Lock away the final test first: the most recent ``final.fraction`` of the
   recorded time (``splits.final_test_start``, from tick times alone).
2. Walk forward over the development rows before it: every candidate fitted
   per fold on the rows before the test block, threshold included.
3. Choose by that evidence: the champion is the learned model with the best
   pooled out-of-time PR-AUC; it is *served* only if it beats persistence by
   the required factors there, otherwise the persistence rule is served.
4. Fit every candidate once more on all development rows: these are the
   artifacts.
5. Open the final test once and score every artifact and persistence on it,
   overall and block by block. Nothing is chosen after this step; the numbers
   are recorded beside walk-forward in each artifact's metadata and the report.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptovol.core.drift import reference_distributions
from cryptovol.core.labels import LabelConfig
from cryptovol.runtime.artifacts import ArtifactMetadata, save_artifact
from cryptovol_training import plots
from cryptovol_training.candidates import Fitted, fit_candidate
from cryptovol_training.dataset import FEATURES, Dataset, RowPolicy, build_dataset, matrix
from cryptovol_training.metrics import (
    binary_metrics,
    clean,
    finite,
    lifts,
)
from cryptovol_training.models import (
    DEFAULT_MODELS,
    MODEL_SPECS,
    PERSISTENCE,
    PERSISTENCE_RULE,
    PERSISTENCE_THRESHOLD,
    ZSCORE,
    persistence_probability,
)
from cryptovol_training.splits import FinalTestConfig, SplitConfig, block_edges, walk_forward
from cryptovol_training.tracking import Tracker, git_sha
from cryptovol_training.walkforward import (
    WalkForwardResult,
    block_comparison,
    run_walk_forward,
)

log = logging.getLogger(__name__)

REPORT_FILE = "walk_forward.json"
FINAL_TEST_BLOCKS = 3


@dataclass
class TrainConfig:
    data: list[Path] = field(default_factory=lambda: [Path("data/coinbase-ticker")])
    out: Path = Path("models/artifacts")
    models: tuple[str, ...] = DEFAULT_MODELS
    label: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    final: FinalTestConfig = field(default_factory=FinalTestConfig)
    policy: RowPolicy = field(default_factory=RowPolicy)
    seed: int = 0
    version: str = "v2.0"
    track: bool = True
    register: bool = True
    tracking_uri: str | None = None
    state_dir: Path = Path(".state/mlflow")
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_SPECS]
        if unknown:
            raise ValueError(f"unknown models {unknown}; known: {sorted(MODEL_SPECS)}")

    @property
    def purge_s(self) -> float:
        return self.label.horizon_s + self.split.embargo_s


@dataclass
class TrainResult:
    dataset: dict[str, Any]
    walk_forward: WalkForwardResult
    champion: str | None
    challenger: str | None
    served: str
    artifacts: dict[str, ArtifactMetadata]
    report: dict[str, Any]
    run_id: str | None = None
    registered: dict[str, str] = field(default_factory=dict)


def pick_champion(wf: WalkForwardResult, models: Sequence[str]) -> tuple[str | None, str | None]:
    """Best and second-best learned model by pooled out-of-time PR-AUC (development rows)."""
    ranked = sorted((m for m in models if m in wf.models),
                    key=lambda m: -np.nan_to_num(finite(wf.models[m].overall.get("pr_auc")),
                                                 nan=-1.0))
    return (ranked[0] if ranked else None, ranked[1] if len(ranked) > 1 else None)


def earns_ml(wf: WalkForwardResult, name: str) -> dict[str, Any]:
    """Walk-forward evidence for serving ``name``: the PR-AUC bars, pooled, and a
    majority of blocks won against persistence."""
    out = lifts(wf.models[name].overall, wf.models[PERSISTENCE].overall)
    blocks = wf.models[name].per_block
    majority = blocks.get("blocks", 0) > 0 and \
        blocks["pr_auc_beats_persistence"] * 2 > blocks["blocks"]
    out["per_block"] = blocks
    out["earns_ml"] = bool(out["checks"]["pr_auc_vs_persistence"]
                           and out["checks"]["pr_auc_vs_prevalence"] and majority)
    return out


def build_report(cfg: TrainConfig, ds: Dataset, wf: WalkForwardResult,
                 champion: str | None, challenger: str | None, served: str) -> dict[str, Any]:
    ml = [m for m in cfg.models if m in wf.models]
    return clean({
        "created_at": datetime.now(UTC).isoformat(),
        "git_sha": git_sha(),
        "dataset": ds.summary(),
        "files": [Path(f).name for f in ds.files],
        "label": cfg.label.to_dict(),
        "row_policy": asdict(cfg.policy),
        "split": cfg.split.to_dict(),
        "final_test": {"config": cfg.final.to_dict(),
                       "start": ds.summary()["final_test_start"]},
        "seed": cfg.seed,
        "features": list(FEATURES),
        "model_features": {m: list(MODEL_SPECS[m].features) for m in cfg.models},
        "folds": wf.folds,
        "models": {
            name: {"overall": ev.overall, "folds": ev.folds, "per_block": ev.per_block}
            for name, ev in wf.models.items()
        },
        "champion": champion,
        "challenger": challenger,
        "served": served,
        "acceptance": {name: earns_ml(wf, name) for name in [*ml, ZSCORE]},
    })


def _iso_ts(ts: np.ndarray) -> str | None:
    if not len(ts):
        return None
    return datetime.fromtimestamp(float(ts.max()), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def final_test(fitted: dict[str, Fitted], rows: pd.DataFrame,
               n_blocks: int = FINAL_TEST_BLOCKS) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every fitted candidate and persistence on the locked final test: overall,
    per block (equal row counts in time order), and against persistence."""
    y = rows["spike"].to_numpy(dtype=np.int64)
    scores = {name: (f.score(rows), f.threshold) for name, f in fitted.items()}
    scores[PERSISTENCE] = (persistence_probability(rows["persistence"].to_numpy()),
                           PERSISTENCE_THRESHOLD)
    edges = block_edges(rows["ts"].to_numpy(), n_blocks) if len(rows) else [0, 0]
    spans = [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]
    blocks_of: dict[str, list[dict[str, Any]]] = {}
    results: dict[str, Any] = {}
    for name, (p, threshold) in scores.items():
        blocks_of[name] = [
            {"block": k, "start": _iso_ts(rows["ts"].to_numpy()[lo:lo + 1]),
             "end": _iso_ts(rows["ts"].to_numpy()[hi - 1:hi]),
             **binary_metrics(y[lo:hi], p[lo:hi], threshold)}
            for k, (lo, hi) in enumerate(spans)
        ]
        results[name] = {"overall": binary_metrics(y, p, threshold), "blocks": blocks_of[name]}
    for name, result in results.items():
        result["vs_persistence"] = lifts(result["overall"], results[PERSISTENCE]["overall"])
        result["per_block"] = block_comparison(blocks_of[name], blocks_of[PERSISTENCE])
    predictions = pd.DataFrame({"ts": rows["ts"].to_numpy(), "y": y})
    for name, (p, threshold) in scores.items():
        predictions[name] = p
        predictions[f"{name}_flag"] = p >= threshold
    summary = {
        "rows": len(rows), "prevalence": float(y.mean()) if len(y) else None,
        "start": _iso_ts(rows["ts"].to_numpy()[:1]), "end": _iso_ts(rows["ts"].to_numpy()),
        "models": results,
    }
    return clean(summary), predictions


def _fit_all(cfg: TrainConfig, train_rows: pd.DataFrame) -> dict[str, Fitted]:
    return {name: fit_candidate(name, train_rows, seed=cfg.seed, purge_s=cfg.purge_s)
            for name in [*cfg.models, ZSCORE, PERSISTENCE_RULE]}


_DESCRIPTIONS = {
    ZSCORE: "z-score rule: Phi((log vol_ratio_60_300 - mu) / sigma), mu and sigma from the "
            "fitting rows",
    PERSISTENCE_RULE: "persistence: r / (1 + r) of r = rv_60s / tau (the engine's "
                      "persistence_ratio feature), threshold 0.5: 'this minute already is a spike "
                      "minute'",
}


def _save(cfg: TrainConfig, ds: Dataset, report: dict[str, Any], fitted: dict[str, Fitted],
          train_rows: pd.DataFrame, served: str) -> dict[str, ArtifactMetadata]:
    common = {
        "training_data_fingerprint": ds.fingerprint,
        "label": cfg.label.to_dict(),
        "row_policy": asdict(cfg.policy),
        "git_sha": report.get("git_sha"),
        "dataset": report["dataset"],
        "split": cfg.split.to_dict(),
        "seed": cfg.seed,
        "fit_rows": len(train_rows),
        "fit_end": _iso_ts(train_rows["ts"].to_numpy()),
    }
    wf_models, final = report["models"], report["final_test"]
    written: dict[str, ArtifactMetadata] = {}
    for name, f in fitted.items():
        raw = matrix(train_rows, f.features)
        reference = reference_distributions(f.contract.impute(raw), f.features,
                                            f.score_matrix(raw))
        wf_name = PERSISTENCE if name == PERSISTENCE_RULE else name
        metrics = {
            "walk_forward": wf_models[wf_name]["overall"],
            "walk_forward_folds": wf_models[wf_name]["folds"],
            "walk_forward_per_block": wf_models[wf_name]["per_block"],
            "persistence_walk_forward": wf_models[PERSISTENCE]["overall"],
            "acceptance": report["acceptance"].get(name, {}),
            "final_test": final["models"].get(name, {}).get("overall", {}),
            "final_test_blocks": final["models"].get(name, {}).get("blocks", []),
            "final_test_vs_persistence": final["models"].get(name, {}).get("vs_persistence", {}),
            "persistence_final_test": final["models"][PERSISTENCE]["overall"],
            "final_test_training_label_rows": final["training_label_rows"]["models"]
            .get(name, {}).get("overall", {}),
            "final_test_training_label_rows_vs_persistence": final["training_label_rows"]
            ["models"].get(name, {}).get("vs_persistence", {}),
        }
        variant = "baseline" if name == ZSCORE else "ml"
        description = _DESCRIPTIONS.get(name) or MODEL_SPECS[name].description
        written[name] = save_artifact(
            cfg.out / name, f.model, version=f"{cfg.version}-{name}", variant=variant,
            features=list(f.features), threshold=f.threshold, metrics=clean(metrics),
            imputation=f.contract.imputation, description=description,
            champion=(name == served), reference=clean(reference),
            final_test_start=final.get("start"), **common,
        )
    return written


def _track(cfg: TrainConfig, result: TrainResult, plot_files: list[Path]) -> None:
    tracker = Tracker(cfg.tracking_uri, state_dir=cfg.state_dir)
    report = result.report
    tags = {"git_sha": str(report.get("git_sha")), "champion": str(result.champion),
            "served": result.served,
            "training_data_fingerprint": result.dataset["fingerprint"]}
    with tracker.start_run("train", tags=tags) as run:
        tracker.log_params({
            **{f"label.{k}": v for k, v in cfg.label.to_dict().items()},
            **{f"rows.{k}": v for k, v in asdict(cfg.policy).items()},
            **{f"split.{k}": v for k, v in cfg.split.to_dict().items()},
            "final_test.fraction": cfg.final.fraction,
            "final_test.start": report["final_test"].get("start"),
            "seed": cfg.seed, "models": ",".join(cfg.models), "version": cfg.version,
            "features": ",".join(FEATURES), "n_features": len(FEATURES),
            "dataset.fingerprint": result.dataset["fingerprint"],
            "dataset.rows": result.dataset["rows"], "dataset.files": result.dataset["files"],
            "dataset.train_rows": result.dataset["train_rows"],
            "git_sha": report.get("git_sha"), "champion": result.champion,
            "challenger": result.challenger, "served": result.served,
            **{f"model.{m}": MODEL_SPECS[m].description for m in cfg.models},
        })
        for name, ev in result.walk_forward.models.items():
            for fold in ev.folds:
                tracker.log_metrics({f"{name}.fold.{k}": v for k, v in fold.items()
                                     if k != "fold"}, step=int(fold["fold"]))
            tracker.log_metrics({f"{name}.overall.{k}": v for k, v in ev.overall.items()})
        for name, res in report["final_test"]["models"].items():
            tracker.log_metrics({f"{name}.final_test.{k}": v
                                 for k, v in res["overall"].items() if isinstance(v, int | float)})
            for block in res["blocks"]:
                tracker.log_metrics({f"{name}.final_test_block.{k}": v for k, v in block.items()
                                     if isinstance(v, int | float) and k != "block"},
                                    step=int(block["block"]))
        tracker.log_json(report, "walk_forward.json")
        tracker.log_json(list(FEATURES), "features.json")
        tracker.log_files(plot_files, "plots")
        folders = [cfg.out / name for name in result.artifacts]
        for folder in folders:
            tracker.log_artifact_folder(folder)
        result.run_id = run.info.run_id
        if cfg.register:
            result.registered = tracker.register(run.info.run_id, folders, result.served,
                                                 result.challenger)


def train(cfg: TrainConfig) -> TrainResult:
    ds = build_dataset(cfg.data, cfg.label, progress=cfg.progress, policy=cfg.policy,
                       final=cfg.final, embargo_s=cfg.split.embargo_s)
    eval_rows, train_rows = ds.eval_rows, ds.train_rows  # development rows only
    summary = ds.summary()
    log.info("dataset built", extra={"dataset": summary})
    if len(eval_rows) < 100 or eval_rows["spike"].sum() == 0:
        raise ValueError(f"not enough labelled development rows to train: {summary}")
    folds = walk_forward(eval_rows["ts"].to_numpy(), cfg.split, cfg.label.horizon_s,
                         train_rows["ts"].to_numpy())
    wf = run_walk_forward(eval_rows, train_rows, folds, cfg.models, seed=cfg.seed,
                          progress=cfg.progress, purge_s=cfg.purge_s)
    champion, challenger = pick_champion(wf, cfg.models)
    served = champion if champion and earns_ml(wf, champion)["earns_ml"] else PERSISTENCE_RULE
    report = build_report(cfg, ds, wf, champion, challenger, served)
    fitted = _fit_all(cfg, train_rows)  # every choice is made: now the final fit ...
    final, final_predictions = final_test(fitted, ds.final_test_rows())  # ... and the test
    report["final_test"].update(final)
    # The locked hours may hold too few spikes past warm-up to rank anything: the
    # same hours' training-label rows (tau on >= 5 min of history) are the second view.
    broad, _ = final_test(fitted, ds.final_test_rows("training"))
    report["final_test"]["training_label_rows"] = broad
    cfg.out.mkdir(parents=True, exist_ok=True)
    artifacts = _save(cfg, ds, report, fitted, train_rows, served)
    (cfg.out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    result = TrainResult(summary, wf, champion, challenger, served, artifacts, report)
    if cfg.track:
        with tempfile.TemporaryDirectory() as tmp:
            importance = {m: wf.models[m].importance for m in cfg.models}
            names = [*cfg.models, ZSCORE, PERSISTENCE]
            files = plots.all_plots(wf.predictions, names, importance, Path(tmp))
            files += plots.final_test_plots(final_predictions,
                                            [*cfg.models, ZSCORE, PERSISTENCE_RULE, PERSISTENCE],
                                            Path(tmp))
            _track(cfg, result, files)
    return result


def markdown_table(report: dict[str, Any]) -> str:
    """Walk-forward (per fold and overall) and the final test (overall, per block) as Markdown."""
    cols = ("n", "prevalence", "pr_auc", "roc_auc", "precision", "recall", "f1", "flag_rate",
            "brier", "ece", "threshold")

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    def row(name: str, part: str, m: dict[str, Any], bold: bool = False) -> str:
        cells = " | ".join(fmt(m.get(c)) for c in cols)
        if bold:
            return f"| **{name}** | **{part}** | {cells} |"
        return f"| {name} | {part} | {cells} |"

    head = ["| model | fold | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    lines = ["Walk-forward (development rows):", "", *head]
    for name, data in report["models"].items():
        lines += [row(name, str(fold["fold"]), fold) for fold in data["folds"]]
        lines.append(row(name, "all", data["overall"], bold=True))
    views = (("Locked final test, evaluation rows (label as defined, past warm-up):",
              report.get("final_test", {})),
             ("Locked final test, training-label rows (tau on >= 5 min of history):",
              report.get("final_test", {}).get("training_label_rows", {})))
    for title, view in views:
        if not view.get("models"):
            continue
        lines += ["", title, "", *head]
        for name, data in view["models"].items():
            lines += [row(name, f"block {b['block']}", b) for b in data["blocks"]]
            lines.append(row(name, "all", data["overall"], bold=True))
    return "\n".join(lines)


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    out = asdict(cfg)
    return clean({k: str(v) if isinstance(v, Path) else v for k, v in out.items()})
