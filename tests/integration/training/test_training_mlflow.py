"""``cryptovol-train`` against a real MLflow tracking server over HTTP: the run,
its metrics, parameters and plots, registered versions with aliases, the
``register`` command, and a registered artifact that loads with its checksum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from cryptovol.runtime.artifacts import load_artifact
from cryptovol_training.cli import main
from cryptovol_training.tracking import EXPERIMENT, REGISTERED_MODEL

SMALL = ["--lookback", "600", "--blocks", "4", "--quiet",
         "--models", "logistic_regression,random_forest"]
ARTIFACTS = {"logistic_regression", "random_forest", "baseline", "persistence_rule"}


@pytest.fixture(scope="module")
def trained(mlflow_server: str, train_recordings: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifacts")
    code = main(["train", "--data", str(train_recordings), "--out", str(out),
                 "--tracking-uri", mlflow_server, *SMALL])
    assert code == 0
    return out


def test_run_metrics_params_and_plots_are_tracked(mlflow_server: str, trained: Path) -> None:
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name = 'train'")
    assert len(runs) == 1
    run = runs[0]
    report = json.loads((trained / "walk_forward.json").read_text())
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["label.lookback_s"] == "600.0"
    assert params["dataset.fingerprint"] == report["dataset"]["fingerprint"]
    assert params["features"].split(",") == report["features"]
    assert tags["git_sha"] == str(report["git_sha"])
    for name in ("logistic_regression", "random_forest", "baseline", "persistence"):
        assert metrics[f"{name}.overall.pr_auc"] == pytest.approx(
            report["models"][name]["overall"]["pr_auc"])
        assert f"{name}.overall.prevalence" in metrics
    history = client.get_metric_history(run.info.run_id, "random_forest.fold.n")
    assert sorted(m.step for m in history) == [0, 1]  # one value per fold
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"pr_curves.png", "reliability_walk_forward.png", "feature_importance.png",
            "score_by_regime.png", "reliability_final_test.png",
            "pr_curves_final_test.png"} <= plots
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "models")}
    assert logged == ARTIFACTS
    # the locked final test is tracked beside walk-forward, from the same report
    final = report["final_test"]["models"]["logistic_regression"]["overall"]
    assert metrics["logistic_regression.final_test.n"] == final["n"] > 0
    assert tags["served"] == report["served"]


def test_versions_and_aliases_are_registered(mlflow_server: str, trained: Path,
                                             tmp_path: Path) -> None:
    client = MlflowClient(mlflow_server)
    report = json.loads((trained / "walk_forward.json").read_text())
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert {v.tags["artifact"] for v in versions} == ARTIFACTS
    champion = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    challenger = client.get_model_version_by_alias(REGISTERED_MODEL, "challenger")
    assert champion.tags["artifact"] == report["served"]  # the model the evidence serves
    assert challenger.tags["artifact"] == report["challenger"]
    assert champion.version != challenger.version
    # the registered champion is a complete artifact that loads and scores like the local one
    folder = Path(download_artifacts(f"models:/{REGISTERED_MODEL}@champion",
                                     dst_path=str(tmp_path)))
    remote = load_artifact(folder)
    local = load_artifact(trained / report["served"])
    assert remote.metadata.sha256 == local.metadata.sha256 == champion.tags["sha256"]
    X = np.random.default_rng(0).lognormal(-1, 0.5, size=(50, len(local.metadata.features)))
    np.testing.assert_allclose(remote.score(X), local.score(X), rtol=1e-12)  # BLAS order


def test_register_command_adds_versions_and_moves_aliases(mlflow_server: str,
                                                          trained: Path) -> None:
    client = MlflowClient(mlflow_server)
    before = len(client.search_model_versions(f"name = '{REGISTERED_MODEL}'"))
    code = main(["register", "--models", str(trained), "--tracking-uri", mlflow_server,
                 "--champion", "random_forest", "--challenger", "logistic_regression"])
    assert code == 0
    after = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert len(after) == before + len(ARTIFACTS)
    champion = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    challenger = client.get_model_version_by_alias(REGISTERED_MODEL, "challenger")
    assert champion.tags["artifact"] == "random_forest"
    assert challenger.tags["artifact"] == "logistic_regression"
    assert int(champion.version) > before
    run = client.get_run(champion.run_id)
    assert run.info.run_name == "register"
    assert "random_forest.walk_forward.pr_auc" in run.data.metrics


def test_register_refuses_a_tampered_artifact(
    mlflow_server: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    client = MlflowClient(mlflow_server)
    before = len(client.search_model_versions(f"name = '{REGISTERED_MODEL}'"))
    copy = tmp_path / "artifacts"
    shutil.copytree(trained, copy)
    model = copy / "logistic_regression" / "model.skops"
    model.write_bytes(model.read_bytes() + b"tampered")
    code = main(["register", "--models", str(copy), "--tracking-uri", mlflow_server])
    assert code == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert len(client.search_model_versions(f"name = '{REGISTERED_MODEL}'")) == before
