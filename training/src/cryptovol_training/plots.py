"""Evaluation plots as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

from cryptovol_training.walkforward import REGIMES


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pr_curves(predictions: pd.DataFrame, models: Sequence[str], path: Path,
              title: str = "Out-of-time precision-recall (all folds pooled)") -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 5))
    y = predictions["y"].to_numpy()
    for name in models:
        if y.sum() == 0:
            break
        precision, recall, _ = precision_recall_curve(y, predictions[name].to_numpy())
        ax.plot(recall, precision, label=name)
    if len(y):
        ax.axhline(y.mean(), color="grey", linestyle=":", label=f"prevalence {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1),
           title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def reliability(predictions: pd.DataFrame, models: Sequence[str], path: Path,
                title: str) -> Path:
    """Reliability diagram: observed spike rate against mean score in equal-width
    bins (marker area ~ rows in the bin), with each model's ECE and Brier."""
    from cryptovol_training.metrics import CALIBRATION_BINS, expected_calibration_error

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.5, 7), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    y = predictions["y"].to_numpy()
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    for name in models:
        p = np.clip(predictions[name].to_numpy(), 0, 1)
        which = np.minimum((p * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
        count = np.bincount(which, minlength=CALIBRATION_BINS)
        used = count > 0
        mean_p = np.bincount(which, weights=p, minlength=CALIBRATION_BINS)[used] / count[used]
        rate = np.bincount(which, weights=y, minlength=CALIBRATION_BINS)[used] / count[used]
        ece = expected_calibration_error(y, p)
        brier = float(np.mean((p - y) ** 2)) if len(y) else float("nan")
        (line,) = ax.plot(mean_p, rate, marker="o", markersize=3,
                          label=f"{name} (ECE {ece:.3f}, Brier {brier:.3f})")
        ax.scatter(mean_p, rate, s=10 + 200 * count[used] / max(len(p), 1),
                   color=line.get_color(), alpha=0.4)
        hist.hist(p, bins=edges, histtype="step", color=line.get_color())
    if len(y):
        ax.axhline(y.mean(), color="grey", linewidth=0.8, label=f"spike rate {y.mean():.3f}")
    ax.set(ylabel="observed spike rate", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=7)
    hist.set(xlabel="score (probability of a spike)", ylabel="rows")
    return _save(fig, path)


def feature_importance(importance: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    models = [m for m, imp in importance.items() if imp]
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(4.5 * max(len(models), 1), 7),
                             squeeze=False)
    for ax, name in zip(axes[0], models, strict=False):
        items = sorted(importance[name].items(), key=lambda kv: kv[1])
        total = sum(v for _, v in items) or 1.0
        ax.barh([k for k, _ in items], [v / total for _, v in items])
        ax.set(title=name, xlabel="share of importance")
        ax.tick_params(axis="y", labelsize=7)
    return _save(fig, path)


def score_by_regime(predictions: pd.DataFrame, models: Sequence[str], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.6), squeeze=False,
                             sharey=False)
    bins = np.linspace(0, 1, 31)
    for ax, name in zip(axes[0], models, strict=True):
        for regime in REGIMES:
            part = predictions.loc[predictions["regime"] == regime, name]
            if len(part):
                ax.hist(part, bins=bins, histtype="step", density=True, label=regime)
        ax.set(title=name, xlabel="score")
        ax.legend(fontsize=7)
    fig.suptitle("Out-of-time score distribution by regime (terciles of tau)", fontsize=10)
    return _save(fig, path)


def all_plots(
    predictions: pd.DataFrame,
    models: Sequence[str],
    importance: Mapping[str, Mapping[str, float]],
    folder: Path,
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if predictions.empty:
        return []
    return [
        pr_curves(predictions, models, folder / "pr_curves.png"),
        reliability(predictions, models, folder / "reliability_walk_forward.png",
                    "Reliability out of time (walk-forward, all folds pooled)"),
        feature_importance(importance, folder / "feature_importance.png"),
        score_by_regime(predictions, models, folder / "score_by_regime.png"),
    ]


def final_test_plots(predictions: pd.DataFrame, models: Sequence[str],
                     folder: Path) -> list[Path]:
    """PR curves and reliability on the locked final test."""
    folder.mkdir(parents=True, exist_ok=True)
    if predictions.empty:
        return []
    return [
        pr_curves(predictions, models, folder / "pr_curves_final_test.png",
                  "Precision-recall on the locked final test"),
        reliability(predictions, models, folder / "reliability_final_test.png",
                    "Reliability on the locked final test"),
    ]
