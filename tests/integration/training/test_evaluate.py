"""``cryptovol-train evaluate`` on recordings no model has seen: a synthetic
market written in the recorder's format, scored by the committed artifacts."""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cryptovol_training.cli import main

REPO = Path(__file__).resolve().parents[3]
MODELS = REPO / "models" / "artifacts"


def write_recording(path: Path, minutes: float = 45, seed: int = 11) -> int:
    """Random-walk BTC ticks (about 3 a second) with volatility bursts, one JSON a line,
    naive UTC timestamps as the recorder writes them."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * 3)
    dt = rng.exponential(1 / 3, n)
    t0 = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
    times = np.cumsum(dt)
    burst = np.where(np.sin(times / 97.0) > 0.7, 4.0, 1.0)
    price = 61_000 * np.exp(np.cumsum(rng.normal(0, 2e-5 * burst)))
    with gzip.open(path, "wt") as out:
        for t, p in zip(times, price, strict=True):
            stamp = (t0 + timedelta(seconds=float(t))).replace(tzinfo=None).isoformat()
            bid, ask = p - 0.01, p + 0.01
            raw = {"type": "ticker", "product_id": "BTC-USD", "price": f"{p:.2f}",
                   "best_bid": f"{bid:.2f}", "best_ask": f"{ask:.2f}",
                   "best_bid_quantity": f"{rng.uniform(0.01, 2):.6f}",
                   "best_ask_quantity": f"{rng.uniform(0.01, 2):.6f}"}
            out.write(json.dumps({"timestamp": stamp, "product_id": "BTC-USD",
                                  "price": raw["price"], "raw": raw}) + "\n")
    return n


def test_evaluate_scores_every_artifact_on_unseen_recordings(tmp_path: Path) -> None:
    recording = tmp_path / "ticks_BTCUSD_20310304_120000.ndjson.gz"
    write_recording(recording)
    out = tmp_path / "eval" / "report.json"
    code = main(["evaluate", "--data", str(recording), "--models", str(MODELS),
                 "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert report["label"]["lookback_s"] == 1800.0  # the label the artifacts were trained on
    assert report["rows"] > 1000 and 0.0 < report["prevalence"] < 0.6
    names = {p.name for p in MODELS.iterdir() if (p / "metadata.json").is_file()}
    assert set(report["models"]) == names | {"persistence"}
    for name, metrics in report["models"].items():
        assert metrics["n"] == report["rows"], name
        for key in ("pr_auc", "roc_auc", "brier", "prevalence"):
            assert metrics[key] is not None and math.isfinite(metrics[key]), (name, key)
        assert 0.0 <= metrics["brier"] <= 1.0
        assert {"precision", "recall", "f1", "flag_rate", "threshold"} <= set(metrics)
        assert sum(b["n"] for b in metrics["blocks"]) == report["rows"]  # block by block too
    assert len(report["blocks"]) == 3
    served = report["models"]["logistic_regression"]
    assert set(served["vs_persistence"]["checks"]) == {
        "pr_auc_vs_persistence", "pr_auc_vs_prevalence", "f1_vs_persistence",
        "flag_rate_within_half_to_twice_spike_rate", "brier_below_persistence"}


def test_evaluate_with_another_label_and_a_broken_artifact(tmp_path: Path) -> None:
    import shutil

    recording = tmp_path / "ticks.ndjson.gz"
    write_recording(recording, minutes=36, seed=3)  # rows are warm after 29 min of context
    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    rule = models / "baseline" / "rule.json"
    rule.write_text(rule.read_text().replace("vol_ratio", "vol_ratiO"))
    out = tmp_path / "report.json"
    code = main(["evaluate", "--data", str(recording), "--models", str(models),
                 "--out", str(out), "--lookback", "300", "--quiet"])
    report = json.loads(out.read_text())
    assert code == 1  # the broken artifact is reported, the others still evaluated
    assert "checksum" in report["errors"]["baseline"]
    assert report["label"]["lookback_s"] == 300.0 and report["rows"] > 500
    assert "random_forest" in report["models"] and "baseline" not in report["models"]


def test_evaluate_without_artifacts_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "ticks.ndjson.gz"
    write_recording(recording, minutes=2)
    code = main(["evaluate", "--data", str(recording), "--models", str(tmp_path),
                 "--out", str(tmp_path / "r.json"), "--quiet"])
    assert code == 2
    assert "no artifacts" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
