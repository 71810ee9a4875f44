"""What grading costs: the evaluator beside the pipeline it watches.

- ``library``: the evaluator's step (``Grader``: the features engine's tick
  acceptance, the incremental ``Labeller``, the join) over the bundled
  recordings, a prediction per row past warm-up: ticks and predictions per
  CPU second;
- ``naive``: what a label costs recomputed per prediction from a buffer of the
  ticks around it (the table labeller over the 31 minutes a label reads plus
  its horizon), on a sample of predictions: the speed-up;
- ``service``: the ``cryptovol-evaluator`` process on the real broker, grading
  the whole replay (ticks.raw + predictions.log produced beforehand, as fast as
  Kafka hands them over): records per second, its CPU, and the ratio to the
  featurizer's measured service rate (bench/results/featurizer.json), in wall
  time and per CPU second: above 1 per CPU second, grading a tick and its
  prediction costs less than featurizing it, so the evaluator keeps up with the
  pipeline at full replay speed wherever the featurizer does;
- ``added_cost``: what the evaluator adds to the prediction path: nothing on the
  way to an answer (it only reads topics the pipeline writes anyway); in the
  API, the drift monitor's work per /predict batch (microseconds).

Writes bench/results/evaluator.json.

    python bench/evaluator_bench.py           # about 2 minutes
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from cryptovol.core.codec import encode_record, encode_tick
from cryptovol.core.drift import reference_distributions
from cryptovol.core.features import FeatureEngine
from cryptovol.core.labels import LabelConfig, compute_labels
from cryptovol.core.schemas import PredictionRecord
from cryptovol.core.timestamps import from_micros
from cryptovol.devtools.broker import LocalBroker
from cryptovol.devtools.net import free_port
from cryptovol.runtime.kafka import ensure_topics, make_producer
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol.runtime.settings import ServiceSettings
from cryptovol_api.drift import DriftMonitor
from cryptovol_evaluator.grading import Grader

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "evaluator.json"
DATA = REPO / "data" / "coinbase-ticker"
NAIVE_SAMPLE = 200


def predictions_of(ticks) -> list[PredictionRecord]:  # type: ignore[no-untyped-def]
    engine, out = FeatureEngine(), []
    for tick in ticks:
        res = engine.step(tick)
        if res is None or res.warmup:
            continue
        at = from_micros(res.time_us)
        out.append(PredictionRecord(
            record_id=tick.record_id, product_id=tick.product_id, event_time=at,
            predicted_time=at, score=0.5, spike=True, threshold=0.5, model_variant="ml",
            model_version="bench", api_latency_ms=1.0, e2e_latency_ms=1.0))
    return out


def library(ticks, preds) -> dict:  # type: ignore[no-untyped-def]
    best = math.inf
    for _ in range(3):
        grader, graded = Grader(), 0
        pending = iter(preds)
        started = time.process_time()
        nxt = next(pending, None)
        for tick in ticks:
            graded += len(grader.tick(tick))
            while nxt is not None and nxt.event_time.timestamp() * 1e6 <= tick.event_us:
                graded += len(grader.prediction(nxt) or [])
                nxt = next(pending, None)
        graded += len(grader.close())
        best = min(best, time.process_time() - started)
    records = len(ticks) + len(preds)
    return {"ticks": len(ticks), "predictions": len(preds), "graded": graded,
            "cpu_s": round(best, 3), "records_per_cpu_s": round(records / best),
            "us_per_record": round(best / records * 1e6, 2)}


def naive(ticks, preds) -> dict:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame({"ts": [t.event_us / 1e6 for t in ticks],
                          "price": [t.price for t in ticks], "segment_id": 0,
                          "record_id": [t.record_id for t in ticks]})
    cfg = LabelConfig()
    sample = preds[:: max(1, len(preds) // NAIVE_SAMPLE)][:NAIVE_SAMPLE]
    ts = frame["ts"].to_numpy()
    started = time.process_time()
    for p in sample:
        t = p.event_time.timestamp()
        lo, hi = np.searchsorted(ts, [t - cfg.memory_s, t + cfg.horizon_s + 1])
        window = frame.iloc[lo:hi].reset_index(drop=True)
        compute_labels(window, cfg)
    cpu = time.process_time() - started
    return {"predictions": len(sample), "cpu_s": round(cpu, 3),
            "ms_per_prediction": round(cpu / len(sample) * 1e3, 2)}


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service(ticks, preds, broker: LocalBroker) -> dict:  # type: ignore[no-untyped-def]
    name = os.urandom(4).hex()
    settings = ServiceSettings(service_name="bench", kafka_bootstrap_servers=broker.bootstrap,
                               topic_raw=f"ticks.raw.{name}",
                               topic_predictions=f"predictions.log.{name}")
    labelled = f"predictions.labelled.{name}"
    ensure_topics(settings, [settings.topic_raw, settings.topic_predictions, labelled])
    producer = make_producer(settings)
    for tick in ticks:
        producer.send(settings.topic_raw, key=tick.product_id.encode(), value=encode_tick(tick))
    for p in preds:
        producer.send(settings.topic_predictions, key=p.product_id.encode(),
                      value=encode_record(p))
    producer.flush()
    producer.close()
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
           "TOPIC_RAW": settings.topic_raw, "TOPIC_PREDICTIONS": settings.topic_predictions,
           "TOPIC_LABELLED": labelled, "CONSUMER_GROUP": f"bench-{name}",
           "METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING",
           "PARQUET_ENABLED": "false", "QUALITY_REFRESH_S": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "cryptovol-evaluator")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started, cpu0 = None, 0.0
        deadline = time.monotonic() + 600
        graded = 0.0
        while time.monotonic() < deadline:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            consumed = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                           if ln.startswith("cryptovol_evaluator_ticks_total{"))
            if started is None and consumed > 0:
                started, cpu0 = time.monotonic(), cpu_of(proc.pid)
            graded = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                         if ln.startswith("cryptovol_evaluator_predictions_total{")
                         and 'outcome="duplicate"' not in ln)
            pending = next((float(ln.split()[1]) for ln in text.splitlines()
                            if ln.startswith("cryptovol_evaluator_pending_predictions ")), 0.0)
            if started is not None and consumed >= len(ticks) and graded + pending >= len(preds):
                break
            time.sleep(0.1)
        wall = time.monotonic() - (started or time.monotonic())
        cpu = cpu_of(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(30)
    records = len(ticks) + len(preds)
    featurizer = json.loads((REPO / "bench/results/featurizer.json").read_text())
    runs = featurizer["service"]
    run = runs["featurizer"] if isinstance(runs, dict) else runs[0]  # a row per tick
    pipeline, pipeline_cpu = run["ticks_per_s"], run["ticks_per_cpu_s"]
    return {"records": records, "graded": int(graded), "wall_s": round(wall, 2),
            "records_per_s": round(records / wall), "cpu_s": round(cpu, 2),
            "records_per_cpu_s": round(records / cpu) if cpu else None,
            "featurizer_service_ticks_per_s": pipeline,
            "ticks_per_s_vs_featurizer": round(len(ticks) / wall / pipeline, 2),
            # CPU is what decides whether it keeps up on a loaded machine: per tick
            # (its predictions included) against the featurizer's per tick
            "featurizer_service_ticks_per_cpu_s": pipeline_cpu,
            "ticks_per_cpu_s_vs_featurizer": round(len(ticks) / cpu / pipeline_cpu, 2)
            if cpu else None}


def added_cost() -> dict:
    rng = np.random.default_rng(0)
    features = [f"f{i}" for i in range(4)]
    X = rng.normal(size=(20_000, 4))
    monitor = DriftMonitor(reference_distributions(X, features, rng.random(20_000)), features,
                           "bench", window_s=900, max_rows=100_000)
    batch, scores = rng.normal(size=(100, 4)), rng.random(100)
    n = 5000
    started = time.process_time()
    for _ in range(n):
        monitor.add(batch, scores)
    per_batch = (time.process_time() - started) / n
    started = time.process_time()
    monitor.values()
    scrape = time.process_time() - started
    return {"prediction_path_added_ms": 0.0,
            "api_drift_us_per_batch_of_100": round(per_batch * 1e6, 1),
            "api_drift_psi_at_scrape_ms": round(scrape * 1e3, 1),
            "api_drift_rows_held": 100_000}


def main() -> None:
    ticks = list(read_ticks(open_recordings([DATA])))
    preds = predictions_of(ticks)
    lib = library(ticks, preds)
    slow = naive(ticks, preds)
    per_record_naive = slow["ms_per_prediction"] / 1e3
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg": os.getloadavg()},
        "library": lib, "naive": slow,
        "speedup_vs_naive_per_prediction": round(
            per_record_naive / (lib["cpu_s"] / max(1, lib["predictions"]))),
        "added_cost": added_cost(),
    }
    broker = LocalBroker()
    broker.start()
    try:
        out["service"] = service(ticks, preds, broker)
    finally:
        broker.stop()
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
