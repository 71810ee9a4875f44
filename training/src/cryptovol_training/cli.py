"""``cryptovol-train``: train (default), evaluate, register.

    cryptovol-train                       # = make train: bundled data -> models/artifacts, MLflow
    cryptovol-train train --no-mlflow --models logistic_regression --blocks 4
    cryptovol-train evaluate --data FILE... --models models/artifacts --out eval.json
    cryptovol-train register --models models/artifacts [--champion random_forest]
    cryptovol-train card --models models/artifacts --write docs/model_card.md
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import Field

from cryptovol.core.labels import LabelConfig
from cryptovol.runtime.artifacts import ArtifactError
from cryptovol.runtime.logs import configure_logging
from cryptovol.runtime.settings import ServiceSettings
from cryptovol_training.dataset import RowPolicy
from cryptovol_training.models import DEFAULT_MODELS, MODEL_SPECS
from cryptovol_training.splits import FinalTestConfig, SplitConfig

log = logging.getLogger("cryptovol_training")


class TrainSettings(ServiceSettings):
    service_name: str = "cryptovol-train"
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server or store; empty: sqlite under .state/mlflow"
    )
    models_dir: Path = Path("models/artifacts")
    recordings_dir: Path = Path("data/coinbase-ticker")
    mlflow_state_dir: Path = Path(".state/mlflow")


def _parser(settings: TrainSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryptovol-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")

    def label_args(p: argparse.ArgumentParser, defaults: bool) -> None:
        d = LabelConfig() if defaults else None
        g = p.add_argument_group("label (docs/model_card.md)")
        g.add_argument("--horizon", type=float, default=d and d.horizon_s,
                       help="forward window, s (default %(default)s)")
        g.add_argument("--window", type=float, default=d and d.window_s,
                       help="past RV window, s (default %(default)s)")
        g.add_argument("--lookback", type=float, default=d and d.lookback_s,
                       help="tau lookback, s (default %(default)s)")
        g.add_argument("--quantile", type=float, default=d and d.quantile,
                       help="tau quantile (default %(default)s)")
        g.add_argument("--min-history", type=float, default=None,
                       help="history tau needs, s (default: lookback - window)")

    train = sub.add_parser("train", help="build the dataset, walk forward, write artifacts")
    train.add_argument("--data", nargs="+", type=Path, default=[settings.recordings_dir])
    train.add_argument("--out", type=Path, default=settings.models_dir)
    train.add_argument("--models", default=",".join(DEFAULT_MODELS),
                       help=f"comma-separated, of {sorted(MODEL_SPECS)}")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--version", default="v2.0", help="version prefix (v2.0 -> v2.0-<name>)")
    train.add_argument("--blocks", type=int, default=SplitConfig().n_blocks)
    train.add_argument("--min-train-blocks", type=int, default=SplitConfig().min_train_blocks)
    train.add_argument("--final-fraction", type=float, default=FinalTestConfig().fraction,
                       help="most recent share of recorded time locked away as the final "
                       "test (default %(default)s; 0: none)")
    train.add_argument("--embargo", type=float, default=SplitConfig().embargo_s)
    train.add_argument("--train-history", type=float, default=RowPolicy().train_history_s,
                       help="history (s) tau needs on training rows (default %(default)s)")
    train.add_argument("--no-warmup-training", action="store_true",
                       help="do not learn from warm-up rows")
    train.add_argument("--no-mlflow", action="store_true", help="do not track or register")
    train.add_argument("--no-register", action="store_true", help="track but do not register")
    train.add_argument("--tracking-uri", default=settings.mlflow_tracking_uri)
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    label_args(train, defaults=True)

    ev = sub.add_parser("evaluate", help="score artifacts and persistence on recordings")
    ev.add_argument("--data", nargs="+", type=Path, required=True)
    ev.add_argument("--models", type=Path, default=settings.models_dir)
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument("--include-warmup", action="store_true")
    ev.add_argument("--blocks", type=int, default=3,
                    help="also score each of this many time blocks (default %(default)s)")
    ev.add_argument("--quiet", action="store_true")
    label_args(ev, defaults=False)

    card = sub.add_parser("card", help="render the model card's tables from the artifacts")
    card.add_argument("--models", type=Path, default=settings.models_dir)
    card.add_argument("--write", type=Path, default=None,
                      help="replace the tables block of this card (else print the tables)")

    reg = sub.add_parser("register", help="register existing artifacts in MLflow")
    reg.add_argument("--models", type=Path, default=settings.models_dir)
    reg.add_argument("--champion", default=None)
    reg.add_argument("--challenger", default=None)
    reg.add_argument("--tracking-uri", default=settings.mlflow_tracking_uri)
    return parser


def _label(args: argparse.Namespace, base: LabelConfig | None = None) -> LabelConfig:
    base = base or LabelConfig()
    return LabelConfig(
        horizon_s=args.horizon if args.horizon is not None else base.horizon_s,
        window_s=args.window if args.window is not None else base.window_s,
        lookback_s=args.lookback if args.lookback is not None else base.lookback_s,
        quantile=args.quantile if args.quantile is not None else base.quantile,
        min_history_s=args.min_history,
    )


def _train(args: argparse.Namespace, settings: TrainSettings) -> int:
    from cryptovol_training.train import TrainConfig, markdown_table, train

    cfg = TrainConfig(
        data=args.data, out=args.out, models=tuple(m for m in args.models.split(",") if m),
        label=_label(args), seed=args.seed, version=args.version,
        policy=RowPolicy(train_history_s=args.train_history,
                         train_on_warmup=not args.no_warmup_training),
        split=SplitConfig(n_blocks=args.blocks, min_train_blocks=args.min_train_blocks,
                          embargo_s=args.embargo),
        final=FinalTestConfig(fraction=args.final_fraction),
        track=not args.no_mlflow, register=not (args.no_mlflow or args.no_register),
        tracking_uri=args.tracking_uri, state_dir=settings.mlflow_state_dir,
        progress=not args.quiet,
    )
    result = train(cfg)
    print(markdown_table(result.report))
    acceptance = result.report["acceptance"].get(result.champion or "", {})
    final = result.report["final_test"]["models"].get(result.served, {}).get("vs_persistence")
    print(json.dumps({"champion": result.champion, "challenger": result.challenger,
                      "served": result.served, "acceptance": acceptance,
                      "final_test": final, "artifacts": str(cfg.out),
                      "mlflow_run": result.run_id, "registered": result.registered,
                      "dataset": result.dataset}, indent=2, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cryptovol_training.evaluate import evaluate

    explicit = any(getattr(args, a) is not None for a in
                   ("horizon", "window", "lookback", "quantile", "min_history"))
    report = evaluate(args.data, args.models, label=_label(args) if explicit else None,
                      include_warmup=args.include_warmup, progress=not args.quiet,
                      blocks=args.blocks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    keys = ("pr_auc", "prevalence", "f1", "flag_rate", "brier", "n")
    summary = {name: {k: m.get(k) for k in keys}
               for name, m in report["models"].items()}
    print(json.dumps({"out": str(args.out), "rows": report["rows"], "models": summary,
                      "errors": report["errors"]}, indent=2))
    return 1 if report["errors"] else 0


def _register(args: argparse.Namespace, settings: TrainSettings) -> int:
    from cryptovol_training.registry import register_existing
    from cryptovol_training.tracking import Tracker

    tracker = Tracker(args.tracking_uri, state_dir=settings.mlflow_state_dir)
    versions = register_existing(args.models, tracker, args.champion, args.challenger)
    print(json.dumps({"tracking_uri": tracker.uri, "versions": versions}, indent=2))
    return 0


def _card(args: argparse.Namespace) -> int:
    from cryptovol_training.card import render, write

    if args.write is None:
        print(render(args.models), end="")
    else:
        changed = write(args.models, args.write)
        print(f"{args.write}: {'tables updated' if changed else 'up to date'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = TrainSettings()
    configure_logging(settings.service_name, settings.log_level)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]
    args = _parser(settings).parse_args(argv)
    try:
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "register":
            return _register(args, settings)
        if args.command == "card":
            return _card(args)
        return _train(args, settings)
    except (FileNotFoundError, ValueError, ArtifactError) as exc:
        log.error("cryptovol-train failed: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
