"""Prediction API latency and throughput over real HTTP: the served model beside
every other committed artifact and a naive server, in one run.

Servers, each in its own process:

- ``vectorized``: the real ``cryptovol-api`` serving the served model (the
  artifact marked ``champion``: one matrix per request, the model compiled to
  a fast path verified at start-up, single-threaded model calls);
- ``naive``: the same app and model, but every row scored by its own call of
  the model as it was saved (how the original service predicted);
- ``others``: the real API serving each other committed artifact.

This process drives them open-loop at fixed request rates (requests go out on
schedule whether or not earlier ones have answered, so a slow server shows up
as latency instead of hiding in a slower send rate) and measures each request
from send to full response. Sequential (one at a time) runs give the bare
per-request cost. The *sustainable single-row rate* of a server is the highest
of a ladder of open-loop rates at which p99 <= 100 ms and >= 99.9 % of the
requests are answered; load generator and server share the machine's 2 cores.
Writes bench/results/api.json.

    python bench/api_bench.py            # full run (~8 minutes)
    python bench/api_bench.py --quick    # shorter, for a smoke check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cryptovol.devtools.net import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "api.json"
DATA = REPO / "data" / "coinbase-ticker"
MODELS = REPO / "models" / "artifacts"
TARGETS = {"single_row_p99_ms_at_300_rps": 15.0, "batch_1000_p99_ms": 60.0,
           "sustainable_single_row_rps": 1500}
# the sustainable-rate ladder (requests/s) and what "sustained" means
RATE_LADDER = (250, 500, 1000, 1500, 2000, 2500, 3000)
RATE_SECONDS = 6.0
SUSTAINED_P99_MS = 100.0
SUSTAINED_ANSWERED = 0.999

# (name, rows per request, requests per second, seconds)
SCENARIOS = [
    ("single_row", 1, 300, 15.0),
    ("batch_100", 100, 30, 10.0),
    ("batch_1000", 1000, 5, 10.0),
]
REQUEST_TIMEOUT_S = 30.0
# The naive server saturates at these rates: its runs are kept short (requests
# sent at the same rate, fewer of them) so the whole benchmark stays bounded.
NAIVE_MAX_REQUESTS = {1: 1200, 100: 60, 1000: 5}
SEQUENTIAL = {"vectorized": {1: 300, 100: 50, 1000: 10}, "naive": {1: 100, 100: 3, 1000: 1}}


# -- the naive server (used only here) ----------------------------------------------


def serve_naive(port: int) -> None:
    import uvicorn

    from cryptovol.runtime.logs import configure_logging
    from cryptovol_api.app import create_app
    from cryptovol_api.model import Scorer
    from cryptovol_api.settings import ApiSettings

    class PerRowScorer(Scorer):
        """Scores row by row with the model exactly as saved."""

        def _fastest_scorer(self, artifact):  # type: ignore[no-untyped-def]
            def per_row(X: np.ndarray) -> np.ndarray:
                return np.concatenate([artifact.score(X[i : i + 1]) for i in range(len(X))])

            return per_row

    settings = ApiSettings()
    configure_logging("api-naive", settings.log_level)
    app = create_app(settings, scorer_cls=PerRowScorer)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                loop="uvloop", http="httptools")  # fmt: skip


# -- helpers ------------------------------------------------------------------------


def feature_rows(n: int = 4000) -> list[dict[str, float]]:
    """Warm feature rows of the bundled recordings, evenly sampled."""
    from cryptovol.core.features import FEATURE_NAMES, features_frame
    from cryptovol.runtime.recordings import open_recordings, read_ticks

    frame = features_frame(read_ticks(open_recordings([DATA])))
    warm = frame[~frame["warmup"]]
    sample = warm.iloc[np.linspace(0, len(warm) - 1, n).astype(int)][list(FEATURE_NAMES)]
    return [{k: float(v) for k, v in row.items() if v == v} for row in sample.to_dict("records")]


def served_model(models: Path = MODELS) -> str:
    """The artifact training marked as served (``champion``)."""
    for meta in sorted(models.glob("*/metadata.json")):
        if json.loads(meta.read_text()).get("champion"):
            return meta.parent.name
    return "logistic_regression"


def start_server(mode: str, port: int, log: object, model: str) -> subprocess.Popen:
    variant = json.loads((MODELS / model / "metadata.json").read_text())["variant"]
    env = {
        **os.environ,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "MODELS_DIR": str(MODELS),
        "MODEL_VARIANT": variant,
        "MODEL_VERSION": model,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "KAFKA_CHECK_INTERVAL_S": "3600",
        "LOG_LEVEL": "WARNING",
    }
    if mode == "vectorized":
        cmd = [sys.executable, "-m", "cryptovol_api.main"]
    else:
        cmd = [sys.executable, __file__, "--serve-naive", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{mode} server did not become ready")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bodies(rows: list[dict], per_request: int, count: int) -> list[bytes]:
    import orjson

    out = []
    for i in range(count):
        start = (i * per_request) % len(rows)
        chunk = (rows[start:] + rows[:start])[:per_request]
        out.append(orjson.dumps({"rows": chunk}))
    return out


def stats(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p95": round(float(np.percentile(ms, 95)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "max": round(float(ms.max()), 3),
        "mean": round(float(ms.mean()), 3),
    }


# -- load generation ------------------------------------------------------------------


async def open_loop(url: str, payloads: list[bytes], rate: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    late: list[float] = []
    statuses: dict[str, int] = {}
    timeouts = 0
    connector = aiohttp.TCPConnector(limit=256, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(body: bytes, scheduled: float) -> None:
            nonlocal timeouts
            sent = time.perf_counter()
            late.append(sent - scheduled)
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - sent)
            except (TimeoutError, aiohttp.ClientError):
                timeouts += 1

        tasks = []
        start = time.perf_counter() + 0.05
        for i, body in enumerate(payloads):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body, scheduled)))
        send_done = time.perf_counter()
        await asyncio.gather(*tasks)
        end = time.perf_counter()
    sent_for = send_done - start
    return {
        "requests": len(payloads),
        "ok": len(latencies),
        "statuses": statuses,
        "timeouts": timeouts,
        "sent_over_s": round(sent_for, 3),
        "completed_over_s": round(end - start, 3),
        "achieved_rps": round(len(latencies) / max(end - start, 1e-9), 1),
        "latency_ms": stats(latencies),
        "send_lag_ms_p99": round(float(np.percentile(np.asarray(late) * 1000, 99)), 3),
    }


async def sequential(url: str, payloads: list[bytes], warmup: list[bytes]) -> dict:
    import aiohttp

    latencies = []
    failures = 0
    headers = {"content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S * 4)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for body in warmup:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
        for body in payloads:
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - sent)
            else:
                failures += 1
    total = sum(latencies)
    return {"requests": len(payloads), "failures": failures, "latency_ms": stats(latencies),
            "throughput_rps": round(len(latencies) / total, 1) if total else 0.0}  # fmt: skip


def _server(mode: str, model: str):  # type: ignore[no-untyped-def]
    """A fresh server per measurement, so a backlog a saturated server is still
    working through never leaks into the next one."""
    import contextlib

    @contextlib.contextmanager
    def running():  # type: ignore[no-untyped-def]
        port = free_port()
        with tempfile.TemporaryFile() as log:
            proc = start_server(mode, port, log, model)
            try:
                yield proc, f"http://127.0.0.1:{port}/predict"
            finally:
                stop_server(proc)

    return running()


def run_scenario(
    mode: str, model: str, rows: list[dict], per_request: int, rate: int, seconds: float,
    quick: bool,
) -> dict:
    count = int(rate * (min(seconds, 3.0) if quick else seconds))
    n_seq = SEQUENTIAL[mode][per_request]
    if mode == "naive":
        count = min(count, NAIVE_MAX_REQUESTS[per_request])
    if quick:
        n_seq = max(1, n_seq // 5)
    with _server(mode, model) as (proc, url):
        seq = asyncio.run(sequential(url, bodies(rows, per_request, n_seq), bodies(rows, 1, 1)))
        server_cpu, client_cpu = cpu_seconds(proc.pid), time.process_time()
        loaded = asyncio.run(open_loop(url, bodies(rows, per_request, count), rate))
        server_cpu = cpu_seconds(proc.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    # CPU per answered request does not depend on what else runs on the machine:
    # it says how many requests/s one core could serve
    done = max(1, loaded["ok"])
    loaded["server_cpu_ms_per_request"] = round(server_cpu * 1000 / done, 3)
    loaded["client_cpu_ms_per_request"] = round(client_cpu * 1000 / done, 3)
    loaded.update(rows_per_request=per_request, target_rps=rate)
    loaded["rows_per_s"] = round(loaded["achieved_rps"] * per_request, 1)
    return {"sequential": seq, "open_loop": loaded}


def sustained(run: dict) -> bool:
    p99 = run["latency_ms"].get("p99", float("inf"))
    return run["ok"] >= SUSTAINED_ANSWERED * run["requests"] and p99 <= SUSTAINED_P99_MS


def sustainable_rate(mode: str, model: str, rows: list[dict], quick: bool) -> dict:
    """Climb the rate ladder on one fresh server per rung until a rung is not sustained."""
    ladder = RATE_LADDER[:4] if quick else RATE_LADDER
    seconds = 2.0 if quick else RATE_SECONDS
    rungs, best = [], 0
    for rate in ladder:
        with _server(mode, model) as (proc, url):
            asyncio.run(sequential(url, [], bodies(rows, 1, 50)))  # warm the server up
            cpu = cpu_seconds(proc.pid)
            run = asyncio.run(open_loop(url, bodies(rows, 1, int(rate * seconds)), rate))
            cpu = cpu_seconds(proc.pid) - cpu
        ok = sustained(run)
        rungs.append({"rate": rate, "sustained": ok, "ok": run["ok"], "requests": run["requests"],
                      "p99_ms": run["latency_ms"].get("p99"),
                      "achieved_rps": run["achieved_rps"],
                      "server_cpu_ms_per_request": round(cpu * 1000 / max(1, run["ok"]), 3)})
        print(f"  {mode:10s} {model:20s} {rate:5d} req/s: p99 {run['latency_ms'].get('p99')} ms,"
              f" ok {run['ok']}/{run['requests']}{'' if ok else '  <- not sustained'}",
              flush=True)
        if not ok:
            break
        best = rate
    cpu_ms = min(r["server_cpu_ms_per_request"] for r in rungs)
    return {"sustainable_rps": best, "criterion": f"p99 <= {SUSTAINED_P99_MS:g} ms and >= "
            f"{SUSTAINED_ANSWERED:.1%} answered, {seconds:g} s per rate", "ladder": rungs,
            # what one core could serve if the server had it to itself (load-independent)
            "server_cpu_ms_per_request": cpu_ms,
            "cpu_bound_rps_per_core": round(1000 / cpu_ms) if cpu_ms > 0 else None}


def run_mode(mode: str, model: str, rows: list[dict], quick: bool,
             scenarios: list[tuple[str, int, int, float]] = SCENARIOS) -> dict:
    results: dict[str, dict] = {}
    for name, per_request, rate, seconds in scenarios:
        result = results[name] = run_scenario(mode, model, rows, per_request, rate, seconds,
                                              quick)
        loaded, seq = result["open_loop"], result["sequential"]
        print(
            f"{mode:10s} {model:20s} {name:11s} {rate:4d} req/s: p50"
            f" {loaded['latency_ms'].get('p50')} p99 {loaded['latency_ms'].get('p99')} ms,"
            f" {loaded['achieved_rps']} req/s ok {loaded['ok']}/{loaded['requests']};"
            f" sequential p50 {seq['latency_ms'].get('p50')} ms; server CPU"
            f" {loaded['server_cpu_ms_per_request']} ms/request",
            flush=True,
        )
    if mode != "naive":
        results["sustainable_single_row"] = sustainable_rate(mode, model, rows, quick)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve-naive", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.serve_naive:
        serve_naive(args.serve_naive)
        return

    served = served_model()
    others = sorted(p.parent.name for p in MODELS.glob("*/metadata.json")
                    if p.parent.name != served)
    meta = {name: json.loads((MODELS / name / "metadata.json").read_text())
            for name in [served, *others]}
    rows = feature_rows()
    load_before = os.getloadavg()
    started = time.time()
    modes = {"vectorized": run_mode("vectorized", served, rows, args.quick),
             "naive": run_mode("naive", served, rows, args.quick)}
    batch_only = [s for s in SCENARIOS if s[0] == "batch_1000"]
    modes["others"] = {name: run_mode("vectorized", name, rows, args.quick, batch_only)
                       for name in others}
    single = modes["vectorized"]["single_row"]["open_loop"]["latency_ms"].get("p99", float("inf"))
    big = modes["vectorized"]["batch_1000"]["open_loop"]["latency_ms"].get("p99", float("inf"))
    rate = modes["vectorized"]["sustainable_single_row"]["sustainable_rps"]
    summary = {
        name: {"model_type": meta[name]["model_type"], "features": len(meta[name]["features"]),
               "sustainable_single_row_rps": res["sustainable_single_row"]["sustainable_rps"],
               "single_row_server_cpu_ms": res["sustainable_single_row"][
                   "server_cpu_ms_per_request"],
               "cpu_bound_single_row_rps_per_core": res["sustainable_single_row"][
                   "cpu_bound_rps_per_core"],
               "batch_1000_p99_ms": res["batch_1000"]["open_loop"]["latency_ms"].get("p99")}
        for name, res in [(served, modes["vectorized"]), *modes["others"].items()]
    }
    result = {
        "benchmark": "api",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "duration_s": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "note": "shared 2-core machine; the load generator runs on the same cores",
        },
        "model": {k: meta[served][k] for k in ("name", "version", "model_type")}
        | {"features": len(meta[served]["features"]), "served": True},
        "method": "open loop at a fixed request rate over HTTP/1.1 keep-alive (aiohttp), "
        "latency from send to full response; 'sequential' is one request at a time; "
        "'sustainable' is the highest rate of the ladder that was sustained",
        "targets": {
            **TARGETS,
            "single_row_p99_ms": single,
            "batch_1000_p99_ms_measured": big,
            "sustainable_single_row_rps_measured": rate,
            "single_row_met": single <= TARGETS["single_row_p99_ms_at_300_rps"],
            "batch_1000_met": big <= TARGETS["batch_1000_p99_ms"],
            "sustainable_met": rate >= TARGETS["sustainable_single_row_rps"],
        },
        "artifacts": summary,
        "results": modes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
