"""Evaluation plots as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve

from cryptovol_training.walkforward import REGIMES


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pr_curves(predictions: pd.DataFrame, models: Sequence[str], path: Path) -> Path:
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
           title="Out-of-time precision-recall (all folds pooled)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def calibration(predictions: pd.DataFrame, models: Sequence[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    y = predictions["y"].to_numpy()
    for name in models:
        if len(np.unique(y)) < 2:
            break
        frac, mean = calibration_curve(y, predictions[name].to_numpy(), n_bins=10,
                                       strategy="quantile")
        ax.plot(mean, frac, marker="o", markersize=3, label=name)
    ax.set(xlabel="mean predicted probability", ylabel="observed spike rate",
           xlim=(0, 1), ylim=(0, 1), title="Calibration out of time (quantile bins)")
    ax.legend(fontsize=8)
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
        calibration(predictions, models, folder / "calibration.png"),
        feature_importance(importance, folder / "feature_importance.png"),
        score_by_regime(predictions, models, folder / "score_by_regime.png"),
    ]
