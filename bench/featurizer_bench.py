"""Featurizer throughput. Writes bench/results/featurizer.json.

1. library: ``FeatureEngine.step`` (and the same with each row encoded as its message)
   over the bundled recordings, ticks per CPU-second of one core;
2. naive: the original approach in the same run, recomputing every feature
   with pandas over a buffer of the last 300 s on every tick (on a slice of
   the same ticks; its values are checked against the engine's);
3. stability: a multi-million-tick run of one segment, compared at checkpoints
   with ``math.fsum`` over the window (max relative error);
4. service: on a real local Kafka broker (started here), in one run, a
   pass-through worker on the stream runtime (consume, produce the same bytes,
   commit) and the featurizer's stage on the same runtime, one replica, each
   draining the same backlog: decode, features, produce, acknowledge, Parquet,
   commit. A row per tick (with Parquet, without) and rows throttled to one per
   product per second; the featurizer's CPU per tick split into decode, engine,
   encode and the client/runtime (the pass-through's CPU per tick);
5. replicas: the service as processes, one and two replicas in one group.

Targets: library >= 100,000 ticks/s and >= 100x naive; the featurizer >= 70 % of
the pass-through in the same run; service >= 20,000 ticks/s.
The machine may be shared: the load average is recorded beside the numbers.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from cryptovol.core.codec import decode_tick, encode_row, encode_tick
from cryptovol.core.features import FEATURE_NAMES, FeatureEngine
from cryptovol.core.ticks import Tick
from cryptovol.devtools.broker import LocalBroker
from cryptovol.runtime.kafka import Clients, ensure_topics, make_consumer, make_producer
from cryptovol.runtime.lifecycle import Shutdown, tune_gc
from cryptovol.runtime.logs import configure_logging
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol.runtime.worker import Batch, Output, Stage, StreamWorker
from cryptovol_featurizer.settings import FeaturizerSettings
from cryptovol_featurizer.sink import ParquetSink
from cryptovol_featurizer.stage import Featurize

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "featurizer.json"
DATA = REPO / "data" / "coinbase-ticker"
TARGETS = {"library_ticks_per_s": 100_000, "speedup_vs_naive": 100, "service_ticks_per_s": 20_000,
           "featurizer_vs_pass_through": 0.7}
LIBRARY_TICKS = 600_000  # at least this many engine updates per measurement
NAIVE_TICKS = 400
STABILITY_TICKS = 3_000_000
SERVICE_PRODUCTS = ("BTC-USD", "XRP-USD", "ETH-USD")  # one per partition of three


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


# -- 1. library ---------------------------------------------------------------------
def bench_library(ticks: list[Tick]) -> dict:
    rounds = max(1, math.ceil(LIBRARY_TICKS / len(ticks)))

    def run_steps() -> None:
        for _ in range(rounds):
            step = FeatureEngine().step
            for t in ticks:
                step(t)

    def run_encoded() -> None:
        step = FeatureEngine().step
        for t in ticks:
            res = step(t)
            if res is not None:
                encode_row(t, res)

    results = {}
    for name, fn, n in (("step", run_steps, rounds * len(ticks)),
                        ("step_and_encode_row", run_encoded, len(ticks))):
        samples = [timed(fn) for _ in range(3)]
        wall = min(s[0] for s in samples)
        cpu = min(s[1] for s in samples)
        results[name] = {"ticks": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                         "ticks_per_s_wall": round(n / wall), "ticks_per_cpu_s": round(n / cpu),
                         "us_per_tick_cpu": round(cpu / n * 1e6, 2)}
    return results


# -- 2. naive -----------------------------------------------------------------------
def naive_features(buffer: deque, t: int) -> dict[str, float]:
    """Every feature from scratch with pandas over the buffer, as the original did."""
    df = pd.DataFrame(list(buffer), columns=["t", "price", "bid", "ask", "bq", "aq"])
    r = np.log(df["price"] / df["price"].shift(1))
    spread = (df["ask"] - df["bid"]) / ((df["ask"] + df["bid"]) / 2) * 1e4
    imb = (df["bq"] - df["aq"]) / (df["bq"] + df["aq"])
    out: dict[str, float] = {}
    for w in (30, 60, 300):
        inside = df["t"] > t - w * 1_000_000
        win = df[inside]
        rw = r[inside].dropna()
        before = df[~inside]
        ref = before["price"].iloc[-1] if len(before) else df["price"].iloc[0]
        out[f"rv_{w}s"] = math.sqrt((rw**2).sum())
        pairs = (rw.abs() * r.abs().shift(1)[inside]).dropna()
        out[f"bpv_{w}s"] = math.sqrt(math.pi / 2 * pairs.sum())
        out[f"logret_{w}s"] = math.log(df["price"].iloc[-1] / ref)
        out[f"parkinson_{w}s"] = math.log(win["price"].max() / win["price"].min()) / (
            2 * math.sqrt(math.log(2)))
        out[f"n_{w}s"] = float(len(win))
        out[f"spread_bps_{w}s"] = float(spread[inside].mean())
        out[f"imbalance_{w}s"] = float(imb[inside].mean())
        if w == 60:
            out["n"] = float(len(rw))
            out["ret_mean"] = float(rw.mean()) if len(rw) else math.nan
            out["ret_std"] = float(rw.std()) if len(rw) > 1 else math.nan
    for a in (30, 60):
        out[f"vol_ratio_{a}_300"] = (out[f"rv_{a}s"] / out["rv_300s"] * math.sqrt(300 / a)
                                     if out["rv_300s"] > 0 else math.nan)
    out["dt_prev"] = (t - buffer[-2][0]) / 1e6 if len(buffer) > 1 else math.nan
    return out


def bench_naive(ticks: list[Tick]) -> dict:
    """On a gap-free stretch, where the buffer is the segment and the windows are full."""
    all_times = [t.event_us for t in ticks]
    need, start = 2500 + NAIVE_TICKS, 0
    for k in range(1, len(ticks)):
        if not 0 < all_times[k] - all_times[k - 1] <= 10_000_000:
            start = k
        elif k - start + 1 >= need:
            break
    stretch = ticks[start: start + need]
    times = all_times[start: start + need]
    engine = FeatureEngine()
    engine_rows = [engine.step(t) for t in stretch][-NAIVE_TICKS:]
    buffer: deque = deque()
    rows = []
    for k, tick in enumerate(stretch):
        t = times[k]
        buffer.append((t, tick.price, tick.best_bid, tick.best_ask, tick.best_bid_quantity,
                       tick.best_ask_quantity))
        while len(buffer) > 3 and buffer[2][0] <= t - 300_000_000:
            buffer.popleft()  # keep two ticks before the longest window (bipower)
        if k == len(stretch) - NAIVE_TICKS:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        if k >= len(stretch) - NAIVE_TICKS:
            rows.append(naive_features(buffer, t))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    worst = 0.0
    for res, naive in zip(engine_rows, rows, strict=True):
        for name, value in zip(FEATURE_NAMES, res.values, strict=True):
            if name == "n" or name not in naive or not math.isfinite(value):
                continue  # the naive recomputation covers the windows, not the context
            worst = max(worst, abs(value - naive[name]) / max(abs(value), 1e-300))
    return {"ticks": NAIVE_TICKS, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "ticks_per_s_wall": round(NAIVE_TICKS / wall, 1),
            "ticks_per_cpu_s": round(NAIVE_TICKS / cpu, 1),
            "ms_per_tick_cpu": round(cpu / NAIVE_TICKS * 1e3, 2),
            "buffer_ticks": len(buffer),
            "max_rel_diff_vs_engine": worst}


# -- 3. stability -------------------------------------------------------------------
def bench_stability() -> dict:
    """One long segment: quiet moves, flat stretches and +-25 % jumps, 10 ticks/s."""
    engine = FeatureEngine()
    step = engine.step
    sys.path.insert(0, str(REPO / "tests" / "oracles"))  # the feature tests' naive oracle
    from features_reference import _features

    spacing = 100_000
    t0 = 1_764_000_000_000_000
    checkpoints = set(range(STABILITY_TICKS - 20_000, STABILITY_TICKS, 3_999))
    window: deque = deque(maxlen=3_003)
    worst = 0.0
    p = 50_000.0
    zero_ok = True
    cpu = 0.0
    wall = time.perf_counter()
    for k in range(STABILITY_TICKS):
        phase = k % 6000
        if phase == 0:
            p *= 1.25 if (k // 6000) % 2 else 0.8
        elif phase < 3000:
            p *= 1.0 + (1e-7 if k % 3 else -1e-7)
        t = t0 + k * spacing
        c0 = time.process_time()
        tick = Tick(str(k), "BTC-USD", t, t, p, p * 0.99999, p * 1.00001, 1.0, 2.0)
        res = step(tick)
        cpu += time.process_time() - c0
        window.append(tick)
        if k in checkpoints:
            want = _features([(tk, tk.event_us) for tk in window])
            for name, value in zip(FEATURE_NAMES, res.values, strict=True):
                if name.startswith("n") or name not in want or not math.isfinite(want[name]):
                    continue  # the reference covers the windows; the context has its own
                if want[name] != value:
                    worst = max(worst, abs(value - want[name]) / max(abs(want[name]), 1e-300))
            if phase > 3300:
                zero_ok &= res.values[0] == 0.0
    return {"ticks": STABILITY_TICKS, "checkpoints": len(checkpoints),
            "max_rel_error_vs_fsum": worst, "rv_30s_exactly_zero_when_flat": zero_ok,
            "wall_s_total": round(time.perf_counter() - wall, 1),
            "ticks_per_cpu_s": round(STABILITY_TICKS / cpu)}


# -- 4. service ---------------------------------------------------------------------
def relabel(ticks: list[Tick], product: str) -> list[Tick]:
    return [t._replace(product_id=product, record_id=product + t.record_id[len(t.product_id):])
            for t in ticks]


class PassThrough(Stage):
    """The naive peer on the same runtime: every record's bytes produced again."""

    def __init__(self, topic_out: str) -> None:
        self.topic_out = topic_out

    def process(self, batch: Batch) -> Output:
        topic = self.topic_out
        return Output(produce=[(topic, r.key, r.value) for records in batch.values()
                               for r in records])


def _drain(settings: FeaturizerSettings, stage: Stage, sinks: list, n: int) -> dict:
    """Run ``stage`` on the stream worker over a backlog of ``n`` records, as the
    service runs it (its clients, its config, its GC tuning), until every record
    is processed, acknowledged and committed. Timed from the first polled record."""
    shutdown = Shutdown(install=False)
    clients = Clients(make_consumer(settings, settings.consumer_group,
                                    max_poll_records=settings.poll_max_records),
                      make_producer(settings), make_consumer(settings, None))
    worker = StreamWorker(settings.worker_config(), clients.consumer, clients.producer, stage,
                          sinks, shutdown=shutdown, reader=clients.reader)
    worker.subscribe()
    tune_gc()  # as the service does
    first_at = None
    cpu0 = time.process_time()
    deadline = time.monotonic() + 600
    while worker.stats.records < n and time.monotonic() < deadline:
        if worker.step() and first_at is None:
            first_at, cpu0 = time.perf_counter(), time.process_time()
    worker.close()
    wall = time.perf_counter() - (first_at or time.perf_counter())
    cpu = time.process_time() - cpu0
    clients.close(30)
    done = worker.stats.records
    return {"ticks": done, "rows": worker.stats.produced, "wall_s": round(wall, 2),
            "ticks_per_s": round(done / wall), "rows_per_s": round(worker.stats.produced / wall),
            "cpu_s": round(cpu, 2), "us_per_tick_cpu": round(cpu / done * 1e6, 2),
            "ticks_per_cpu_s": round(done / cpu)}


def cpu_split(everything: list[Tick]) -> dict:
    """Per-tick CPU of the featurizer's own work, measured apart on the same ticks:
    decoding the message, the engine, encoding the row."""
    raw = [encode_tick(t) for t in everything]
    decoded: list[Tick] = []
    engine = FeatureEngine()
    results: list = []

    def decode() -> None:
        decoded.extend(map(decode_tick, raw))

    def step() -> None:
        results.extend(map(engine.step, decoded))

    def encode() -> None:
        for tick, res in zip(decoded, results, strict=True):
            if res is not None:
                encode_row(tick, res)

    split = {}
    for name, fn in (("decode", decode), ("engine", step), ("encode", encode)):
        _wall, cpu = timed(fn)
        split[f"{name}_us_per_tick"] = round(cpu / len(raw) * 1e6, 2)
    return split


def bench_service(bootstrap: str, ticks: list[Tick], scratch: Path) -> dict:
    """In one run, on one broker: the pass-through worker, then the featurizer's
    stage on the same runtime (one replica, a row per tick; with Parquet as it
    runs by default, without, and throttled to a row per product per second),
    each draining the same backlog of three products on three partitions."""
    run = uuid.uuid4().hex[:8]
    base = FeaturizerSettings(kafka_bootstrap_servers=bootstrap, topic_raw=f"bench.raw.{run}",
                              kafka_partitions=3, log_level="WARNING")
    ensure_topics(base, [base.topic_raw])
    streams = [relabel(ticks, p) for p in SERVICE_PRODUCTS]
    everything = [t for group in zip(*streams, strict=True) for t in group]
    producer = make_producer(base)
    started = time.perf_counter()
    for tick in everything:
        producer.send(base.topic_raw, key=tick.product_id.encode(), value=encode_tick(tick))
    producer.flush(timeout=120)
    producer.close()
    produced_s = time.perf_counter() - started

    runs = {}
    for name, interval, parquet in (("pass_through", None, False),
                                    ("featurizer", 0, True),
                                    ("featurizer_without_parquet", 0, False),
                                    ("featurizer_throttled", 1000, True)):
        settings = base.model_copy(update={
            "topic_features": f"bench.out.{run}.{name}", "consumer_group": f"bench-{run}-{name}",
            "emit_interval_ms": interval or 0, "parquet_dir": scratch / name})
        ensure_topics(settings, [settings.topic_features])
        gc.collect()
        if interval is None:
            stage: Stage = PassThrough(settings.topic_features)
            sinks: list = []
        else:
            stage = Featurize(settings.feature_config(), topic_out=settings.topic_features,
                              emit_interval_ms=interval)
            sinks = [ParquetSink(settings.sink_dir(), settings.parquet_max_rows,
                                 settings.parquet_flush_s)] if parquet else []
        result = _drain(settings, stage, sinks, len(everything))
        result.update(emit={None: "the same bytes", 0: "row per tick"}.get(
            interval, "one row per product per second"), parquet=parquet, partitions=3,
            products=len(SERVICE_PRODUCTS))
        if sinks:
            result["parquet_files"] = sinks[0].files_written
        runs[name] = result
        print(f"  {name}: {result['ticks_per_s']:,} ticks/s", flush=True)
    split = cpu_split(everything)
    own = sum(split.values())
    passing = runs["pass_through"]["us_per_tick_cpu"]
    total = runs["featurizer"]["us_per_tick_cpu"]
    split.update(client_and_runtime_us_per_tick=passing,
                 rest_us_per_tick=round(total - passing - own, 2),
                 total_us_per_tick=total)
    return {
        **runs,
        "featurizer_vs_pass_through": round(
            runs["featurizer"]["ticks_per_s"] / runs["pass_through"]["ticks_per_s"], 3),
        "featurizer_without_parquet_vs_pass_through": round(
            runs["featurizer_without_parquet"]["ticks_per_s"]
            / runs["pass_through"]["ticks_per_s"], 3),
        "cpu_split": split,
        "cpu_split_note": "decode, engine and encode measured apart on the same ticks; "
                          "client_and_runtime is the pass-through's CPU per tick (Kafka "
                          "client, worker loop); rest is what remains of the featurizer's "
                          "CPU per tick (Parquet, metrics, bookkeeping)",
        "producer_backlog_ticks_per_s": round(len(everything) / produced_s),
    }


REPLICA_PRODUCTS = ("ETH-USD", "BTC-USD", "ADA-USD", "AVAX-USD")  # one per partition of four


def _group_done(admin: KafkaAdminClient, group: str, ends: dict) -> tuple[int, bool]:
    try:
        committed = admin.list_group_offsets({group: list(ends)}).get(group, {})
    except KafkaError:  # the group does not exist yet
        return 0, False
    committed = {tp: meta for tp, meta in committed.items() if meta is not None
                 and meta.offset >= 0}
    done = sum(committed[tp].offset for tp in ends if tp in committed)
    return done, all(tp in committed and committed[tp].offset >= end for tp, end in ends.items())


def bench_replicas(bootstrap: str, ticks: list[Tick], scratch: Path) -> list[dict]:
    """The service as separate processes (1, then 2 replicas in one group) draining
    the same backlog on four partitions; timed from the first committed offset to
    the last (start-up excluded), with Parquet on and flushed every second."""
    run = uuid.uuid4().hex[:8]
    settings = FeaturizerSettings(kafka_bootstrap_servers=bootstrap, kafka_partitions=4,
                                  topic_raw=f"bench.replicas.{run}")
    ensure_topics(settings, [settings.topic_raw])
    everything = [t for group in zip(*(relabel(ticks, p) for p in REPLICA_PRODUCTS),
                                     strict=True) for t in group]
    producer = make_producer(settings)
    for tick in everything:
        producer.send(settings.topic_raw, key=tick.product_id.encode(), value=encode_tick(tick))
    producer.flush(timeout=120)
    producer.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    reader = make_consumer(settings, None)
    ends = reader.end_offsets([TopicPartition(settings.topic_raw, p) for p in range(4)])
    reader.close()
    results = []
    for replicas in (1, 2):
        group = f"bench-replicas-{run}-{replicas}"
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "TOPIC_RAW": settings.topic_raw,
               "TOPIC_FEATURES": f"{settings.topic_raw}.f{replicas}",
               "CONSUMER_GROUP": group, "METRICS_PORT": "0", "METRICS_HOST": "127.0.0.1",
               "PARQUET_DIR": str(scratch / f"replicas-{replicas}"), "PARQUET_FLUSH_S": "1",
               "KAFKA_PARTITIONS": "4", "LOG_LEVEL": "WARNING"}
        procs = [subprocess.Popen([str(Path(sys.executable).parent / "cryptovol-featurizer")],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(replicas)]
        first = last = None
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                done, finished = _group_done(admin, group, ends)
                now = time.perf_counter()
                if done and first is None:
                    first, first_done = now, done
                if finished:
                    last = now
                    break
                time.sleep(0.25)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=60)
        if first is None or last is None or last <= first:
            results.append({"replicas": replicas, "error": "did not finish"})
            continue
        drained = len(everything) - first_done
        results.append({"replicas": replicas, "ticks": drained,
                        "wall_s": round(last - first, 2),
                        "ticks_per_s": round(drained / (last - first)),
                        "partitions": 4, "products": len(REPLICA_PRODUCTS),
                        "emit": "row per tick", "parquet": "on, flushed every second"})
    admin.close()
    return results


def met(report: dict) -> dict:
    lib = report["library"]["step"]["ticks_per_cpu_s"]
    service = report["service"]
    two = next((r for r in report["service_replicas"] if r.get("replicas") == 2), {})
    target = TARGETS["service_ticks_per_s"]
    return {
        "library_ticks_per_s": lib >= TARGETS["library_ticks_per_s"],
        "speedup_vs_naive": report["speedup_vs_naive"] >= TARGETS["speedup_vs_naive"],
        "featurizer_vs_pass_through": (service["featurizer_vs_pass_through"]
                                       >= TARGETS["featurizer_vs_pass_through"]),
        "service_row_per_tick_one_replica": service["featurizer"]["ticks_per_s"] >= target,
        "service_row_per_tick_two_replicas": two.get("ticks_per_s", 0) >= target,
        "service_throttled_one_replica": service["featurizer_throttled"]["ticks_per_s"] >= target,
    }


def main() -> int:
    configure_logging("featurizer-bench", "WARNING")
    ticks = list(read_ticks(open_recordings([DATA])))
    load_before = os.getloadavg()
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_before": load_before},
        "targets": TARGETS,
        "recorded_ticks": len(ticks),
    }
    print("library ...", flush=True)
    report["library"] = bench_library(ticks)
    print("naive pandas-over-a-buffer ...", flush=True)
    report["naive"] = bench_naive(ticks)
    lib = report["library"]["step"]["ticks_per_cpu_s"]
    report["speedup_vs_naive"] = round(lib / report["naive"]["ticks_per_cpu_s"])
    print("stability ...", flush=True)
    report["stability"] = bench_stability()
    print("service through a real broker ...", flush=True)
    gc.collect()
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as scratch:
        report["service"] = bench_service(broker.bootstrap, ticks, Path(scratch))
        print("service replicas as processes ...", flush=True)
        report["service_replicas"] = bench_replicas(broker.bootstrap, ticks, Path(scratch))
    report["machine"]["load_avg_after"] = os.getloadavg()
    report["met"] = met(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
