"""The live evaluator on the real broker with the real services (API with a
shadow challenger, featurizer, consumer, evaluator, each its own process):

- replaying recordings, its live PR-AUC per scorer (served model, shadow,
  persistence) equals ``cryptovol-train evaluate`` on the same recordings and
  artifacts within 0.01, on the same rows;
- killed with SIGKILL mid-stream and restarted, it grades exactly the
  predictions an uninterrupted run grades, each once, with the same labels.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from evaluator_stack import (
    Pipeline,
    count_labelled,
    evaluator_env,
    read_labelled,
    sample,
    scrape,
)
from pipeline_procs import REPO_ROOT, Child, wait_http

from cryptovol.core.features import FeatureEngine
from cryptovol.devtools.net import free_port
from cryptovol.runtime.kafka import ensure_topics
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol_training.evaluate import evaluate

pytestmark = pytest.mark.slow

FILES = sorted((REPO_ROOT / "data/coinbase-ticker").glob("ticks_BTCUSD_20251206_0[12]*.ndjson.gz"))
SERVED, SHADOW = "logistic_regression", "random_forest"
WINDOWS = "15m,1h,30d"  # 30d: the whole replay


def expected_predictions() -> int:
    engine = FeatureEngine()
    return sum(1 for t in read_ticks(open_recordings(FILES))
               if (r := engine.step(t)) is not None and not r.warmup)


@pytest.fixture(scope="module")
def replay(kafka_broker, tmp_path_factory) -> Iterator[dict]:
    """The whole pipeline over the recordings, run once; the evaluator's metrics
    and its labelled topic once every prediction is graded."""
    pipe = Pipeline.create(kafka_broker.bootstrap, tmp_path_factory.mktemp("evaluator"))
    expected = expected_predictions()
    try:
        pipe.start_api(REPO_ROOT / "models/artifacts", MODEL_VARIANT="ml",
                       MODEL_VERSION=SERVED, MODEL_SHADOW=SHADOW)
        pipe.start_workers(WINDOWS)
        pipe.replay(FILES)
        url = pipe.url("evaluator")
        deadline = time.monotonic() + 420  # a bound for a loaded machine, not a timing
        while time.monotonic() < deadline:
            metrics = scrape(url)
            graded = sample(metrics, "cryptovol_evaluator_window_rows",
                            role="served", window="30d") or 0
            pending = sample(metrics, "cryptovol_evaluator_pending_predictions") or 0
            if graded and graded + pending >= expected:
                break
            time.sleep(2)
        else:
            outcomes = {k: v for k, v in metrics.items()
                        if k[0].startswith("cryptovol_evaluator_predictions_total")}
            predicted = sample(scrape(pipe.url("consumer")),
                               "cryptovol_consumer_predictions_total")
            pytest.fail(f"graded {graded} + pending {pending} of {expected} predictions "
                        f"(consumer: {predicted}; evaluator: {outcomes}):\n"
                        + pipe.children["evaluator"].log_tail())
        time.sleep(2.5)  # one more refresh of the windows
        yield {"settings": pipe.settings, "labelled": pipe.labelled, "metrics": scrape(url),
               "expected": expected, "name": pipe.name, "tmp": pipe.tmp,
               "records": read_labelled(pipe.settings, pipe.labelled)}
    finally:
        codes = pipe.stop()
    assert [codes[c] for c in ("evaluator", "consumer", "featurizer")] == [0, 0, 0], codes


@pytest.fixture(scope="module")
def offline():
    return evaluate(FILES, REPO_ROOT / "models/artifacts", progress=False)


def test_live_pr_auc_per_scorer_equals_train_evaluate_on_the_same_rows(replay, offline):
    metrics, models = replay["metrics"], offline["models"]
    labelled = sample(metrics, "cryptovol_evaluator_window_labelled_rows", role="served",
                      window="30d")
    # the same rows: every row past warm-up with a label (the last minute of the
    # replay waits for a tick past its horizon that never comes)
    assert labelled == pytest.approx(offline["rows"], rel=0.005)
    for role, version, name in (("served", SERVED, SERVED), ("shadow", SHADOW, SHADOW),
                                ("reference", "persistence", "persistence")):
        live = sample(metrics, "cryptovol_evaluator_pr_auc", role=role, window="30d",
                      **({"model_version": models[name]["version"]} if role != "reference"
                         else {}))
        assert live is not None, (role, version)
        assert live == pytest.approx(models[name]["pr_auc"], abs=0.01), (role, name)
        f1 = sample(metrics, "cryptovol_evaluator_f1", role=role, window="30d",
                    **({"model_version": models[name]["version"]} if role != "reference"
                       else {}))
        assert f1 == pytest.approx(models[name]["f1"], abs=0.01), (role, name)
    spike_rate = sample(metrics, "cryptovol_evaluator_spike_rate", role="served", window="30d")
    assert spike_rate == pytest.approx(offline["prevalence"], abs=0.005)
    # rows whose future window a gap between recordings cuts get no label, live or
    # offline; the last minute of the replay is still waiting for a later tick
    coverage = sample(metrics, "cryptovol_evaluator_label_coverage", role="served", window="30d")
    graded = sample(metrics, "cryptovol_evaluator_window_rows", role="served", window="30d")
    pending = sample(metrics, "cryptovol_evaluator_pending_predictions")
    assert graded + pending == replay["expected"]
    assert coverage == pytest.approx(offline["rows"] / graded, abs=0.005)
    # shorter windows hold fewer rows: the end of the replay
    rows = {w: sample(metrics, "cryptovol_evaluator_window_rows", role="served", window=w)
            for w in ("15m", "1h", "30d")}
    assert 0 < rows["15m"] < rows["1h"] < rows["30d"]


def test_labelled_predictions_are_on_the_topic_once_each(replay):
    records = replay["records"]
    ids = Counter(r["record_id"] for r in records)
    assert ids and max(ids.values()) == 1
    labelled = [r for r in records if r["has_label"]]
    roles = Counter(s["role"] for r in labelled for s in r["scores"])
    assert roles["served"] == roles["shadow"] == roles["reference"] == len(labelled)


def test_sigkill_mid_stream_then_restart_grades_exactly_what_an_uninterrupted_run_does(replay):
    """A second evaluator (own group, own labelled topic) over the same topics,
    killed without warning while grading and started again."""
    settings, name, tmp = replay["settings"], replay["name"] + "-restart", replay["tmp"]
    labelled = f"predictions.labelled.{name}"
    ensure_topics(settings, [labelled])
    port = free_port()
    env = {**evaluator_env(settings, name, labelled, port, tmp, WINDOWS),
           "POLL_MAX_RECORDS": "100"}
    total = len(replay["records"])
    child = Child("cryptovol_evaluator.main", env, tmp / "evaluator-restart.log").start()
    try:
        deadline = time.monotonic() + 180
        while count_labelled(settings, labelled) < total // 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        child.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        child.proc.wait(30)  # type: ignore[union-attr]
        child.proc = None
        at_kill = count_labelled(settings, labelled)
        assert 0 < at_kill < total, f"killed at {at_kill} of {total}: not mid-stream"
        child.start()
        wait_http(f"http://127.0.0.1:{port}/healthz")
        deadline = time.monotonic() + 300
        while count_labelled(settings, labelled) < total and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)  # anything graded twice would show up now
        records = read_labelled(settings, labelled)
    finally:
        code = child.stop()
        print(child.log_tail(3000))
    assert code == 0
    ids = Counter(r["record_id"] for r in records)
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
    uninterrupted = {r["record_id"]: (r["has_label"], r["spike"], r["reason"])
                     for r in replay["records"]}
    restarted = {r["record_id"]: (r["has_label"], r["spike"], r["reason"]) for r in records}
    assert restarted == uninterrupted


def test_train_evaluate_reads_the_labelled_predictions(replay, tmp_path):
    """``cryptovol-train evaluate --labelled``: the evaluator's Parquet, scored offline,
    gives the live numbers."""
    out = tmp_path / "live.json"
    folder = replay["tmp"] / f"labelled-{replay['name']}"
    deadline = time.monotonic() + 60  # the sink flushes every 2 s
    while time.monotonic() < deadline and len(list(folder.rglob("*.parquet"))) == 0:
        time.sleep(1)
    proc = subprocess.run([str(Path(sys.executable).parent / "cryptovol-train"), "evaluate",
                           "--labelled", str(folder), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["graded"] == len(replay["records"])
    by_role = {s["role"]: s for s in report["scorers"]}
    for role in ("served", "shadow", "reference"):
        live = sample(replay["metrics"], "cryptovol_evaluator_pr_auc", role=role, window="30d")
        assert by_role[role]["pr_auc"] == pytest.approx(live, abs=1e-9), role
