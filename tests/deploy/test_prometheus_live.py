"""Real Prometheus scrapes the real services under traffic.

Starts the services from .venv as subprocesses against the real Kafka broker
(fake exchange -> ingest -> featurizer -> consumer -> API, plus direct /predict
calls), scrapes them with Debian's `prometheus` binary the way the chart's
ServiceMonitors do (target labels namespace/service/pod/endpoint, honor_labels),
loads the chart's rule file, then runs every dashboard query and every rule
expression over Prometheus's HTTP API: no errors, and data wherever the
metrics it reads have series."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from deploytools import REPO_ROOT, tool
from promql import (
    TARGET_LABELS,
    Expr,
    dashboard_exprs,
    documented_metrics,
    recorded_series,
    rule_exprs,
    rule_groups,
    selectors,
)

from cryptovol.devtools.net import free_port, port_open

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RECORDING = REPO_ROOT / "data" / "coinbase-ticker" / "ticks_BTCUSD_20251201_164446_10min.ndjson.gz"
NAMESPACE = "cryptovol"
TRAFFIC_TIMEOUT_S = 120.0
# metrics that must have series once a service runs under traffic
MUST_HAVE = {
    "api": [
        "cryptovol_api_requests_total",
        "cryptovol_api_request_latency_seconds_bucket",
        "cryptovol_api_rows_scored_total",
        "cryptovol_api_score_bucket",
        "cryptovol_api_model_loaded",
        "cryptovol_api_model_info",
        "cryptovol_api_errors_total",
    ],
    "ingest": [
        "cryptovol_ingest_messages_total",
        "cryptovol_ingest_ticks_published_total",
        "cryptovol_ingest_connected",
        "cryptovol_ingest_reconnects_total",
        "cryptovol_ingest_sequence_gaps_total",
    ],
    "featurizer": [
        "cryptovol_featurizer_ticks_consumed_total",
        "cryptovol_featurizer_rows_emitted_total",
        "cryptovol_featurizer_consumer_lag",
    ],
    "consumer": [
        "cryptovol_consumer_lag",
        "cryptovol_consumer_breaker_state",
    ],
    "evaluator": [
        "cryptovol_evaluator_predictions_total",
        "cryptovol_evaluator_ticks_total",
        "cryptovol_evaluator_lag",
    ],
}
# the evaluator grades with labels once 30 minutes of market (a minute at 30x) lie behind
GRADED_TIMEOUT_S = 240.0
# the whole pipeline runs: predictions flow end to end
MUST_HAVE_END_TO_END = [
    "cryptovol_consumer_predictions_total",
    "cryptovol_consumer_spikes_total",
    "cryptovol_consumer_last_prediction_timestamp_seconds",
    "cryptovol_consumer_e2e_latency_seconds_bucket",
]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _post_json(url: str, body: object) -> int:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_for(what: str, check, timeout_s: float, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.popen.poll() is not None:
                raise AssertionError(f"{p.name} exited ({p.popen.returncode}):\n{p.log_tail()}")
        if check():
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in procs)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{logs}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Stack:
    prometheus_url: str
    services: dict[str, int]  # running service -> metrics port
    procs: list[Proc] = field(default_factory=list)
    stop_traffic: threading.Event = field(default_factory=threading.Event)

    def query(self, expr: str) -> dict:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = _get(url, timeout=15)
        payload = json.loads(body or b"{}")
        assert status == 200 and payload.get("status") == "success", (expr, status, payload)
        return payload["data"]

    def must_have(self) -> set[str]:
        return {m for s in self.services for m in MUST_HAVE[s]} | set(MUST_HAVE_END_TO_END)

    def series_names(self) -> set[str]:
        data = self.query('count by (__name__) ({__name__=~"cryptovol.*"})')
        return {r["metric"]["__name__"] for r in data["result"]}


def _start(name: str, args: list[str], env: dict[str, str], logs: Path) -> Proc:
    log = logs / f"{name}.log"
    handle = log.open("wb")
    popen = subprocess.Popen(
        args,
        env=env,
        cwd=REPO_ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    return Proc(name, popen, log)


def _stop(proc: Proc, timeout_s: float = 20.0) -> int | None:
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
            return None
    return proc.popen.returncode


def _model_env(tmp: Path) -> dict[str, str]:
    """The committed model artifacts when they exist, else a small model trained
    here on random data over the real feature names (same artifact contract)."""
    committed = REPO_ROOT / "models" / "artifacts"
    if (committed / "random_forest" / "metadata.json").is_file():
        return {
            "MODELS_DIR": str(committed),
            "MODEL_VARIANT": "ml",
            "MODEL_VERSION": "random_forest",
        }
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from cryptovol.core.features import FEATURE_NAMES
    from cryptovol.runtime.artifacts import save_artifact

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(FEATURE_NAMES)))
    y = (X[:, 0] + rng.normal(size=400) > 1.0).astype(int)
    folder = tmp / "models" / "live_test"
    save_artifact(
        folder,
        LogisticRegression().fit(X, y),
        version="v0-live-test",
        variant="ml",
        features=list(FEATURE_NAMES),
        threshold=0.5,
    )
    return {"MODELS_DIR": str(folder.parent), "MODEL_VARIANT": "ml", "MODEL_VERSION": "live_test"}


def _scrape_config(tmp: Path, targets: dict[str, tuple[int, str]], rules: Path) -> Path:
    """Scrape jobs shaped like the operator's output for the chart's ServiceMonitors."""
    jobs = []
    for service, (port, port_name) in targets.items():
        jobs.append(
            {
                "job_name": f"serviceMonitor/{NAMESPACE}/cryptovol-{service}/0",
                "honor_labels": True,  # ServiceMonitor honorLabels: true
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {
                            "namespace": NAMESPACE,
                            "service": f"cryptovol-{service}",
                            "pod": f"cryptovol-{service}-0",
                            "container": service,
                            "endpoint": port_name,
                        },
                    }
                ],
            }
        )
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _fast_rules(tmp: Path) -> Path:
    """The chart's rule file, evaluated every second instead of every 30 s."""
    groups = rule_groups()
    for group in groups:
        group["interval"] = "1s"
    path = tmp / "cryptovol-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def _random_rows(rng: object, n: int) -> list[dict[str, float]]:
    from cryptovol.core.features import FEATURE_NAMES

    values = rng.normal(size=(n, len(FEATURE_NAMES)))  # type: ignore[attr-defined]
    return [
        {name: float(abs(v)) for name, v in zip(FEATURE_NAMES, row, strict=True)} for row in values
    ]


def _drive_api(api: str, stop: threading.Event, max_requests: int = 2000) -> None:
    """Steady /predict traffic while Prometheus scrapes (bounded in count; stops with
    the fixture): valid batches, the original minimal row, and a few bad requests."""
    import numpy as np

    rng = np.random.default_rng(1)
    for i in range(max_requests):
        if stop.wait(0.05):
            return
        if i % 50 == 0:
            _post_json(api + "/predict", {"rows": [{"ret_mean": 0.05, "ret_std": 0.01, "n": 50}]})
            _post_json(api + "/predict", {"rows": "not-a-list"})
            _get(api + "/version")
        else:
            _post_json(api + "/predict", {"rows": _random_rows(rng, 1 + i % 7)})


@pytest.fixture(scope="module")
def stack(kafka_broker: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = tool("prometheus")
    tmp = tmp_path_factory.mktemp("live")
    logs = tmp / "logs"
    logs.mkdir()
    run_id = uuid.uuid4().hex[:8]
    common = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,  # type: ignore[attr-defined]
        "TOPIC_RAW": f"ticks.raw.{run_id}",
        "TOPIC_FEATURES": f"ticks.features.{run_id}",
        "TOPIC_PREDICTIONS": f"predictions.log.{run_id}",
        "PRODUCTS": "BTC-USD",
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(tmp / "data"),
        "METRICS_HOST": "127.0.0.1",
    }
    ports = {
        name: free_port()
        for name in ("api", "ingest", "featurizer", "consumer", "evaluator", "exchange", "prom")
    }
    for module in (
        "cryptovol_api",
        "cryptovol_ingest",
        "cryptovol_featurizer",
        "cryptovol_consumer",
        "cryptovol_evaluator",
    ):
        assert importlib.util.find_spec(f"{module}.main"), f"{module} is not installed in .venv"
    procs: list[Proc] = []
    stop_traffic = threading.Event()
    try:
        api = f"http://127.0.0.1:{ports['api']}"
        procs.append(
            _start(
                "api",
                [str(BIN / "cryptovol-api")],
                {
                    **common,
                    **_model_env(tmp),
                    "LOG_LEVEL": "INFO",  # uvicorn's shutdown lines
                    "API_HOST": "127.0.0.1",
                    "API_PORT": str(ports["api"]),
                },
                logs,
            )
        )
        _wait_for("the API to load its model", lambda: _get(api + "/readyz")[0] == 200, 60, procs)

        procs.append(
            _start(
                "featurizer",
                [str(BIN / "cryptovol-featurizer")],
                {
                    **common,
                    "METRICS_PORT": str(ports["featurizer"]),
                    "CONSUMER_GROUP": f"featurizer-{run_id}",
                    "LAG_INTERVAL_S": "1",
                },
                logs,
            )
        )
        procs.append(
            _start(
                "consumer",
                [str(BIN / "cryptovol-consumer")],
                {
                    **common,
                    "METRICS_PORT": str(ports["consumer"]),
                    "API_URL": api,
                    "CONSUMER_GROUP": f"consumer-{run_id}",
                    "PREDICT_WARMUP": "true",
                    "LOG_PREDICTIONS": "true",  # predictions.log, which the evaluator grades
                    "PREDICTION_LOG_DIR": str(tmp / "predictions"),
                    "LAG_INTERVAL_S": "1",
                },
                logs,
            )
        )
        procs.append(
            _start(
                "evaluator",
                [str(BIN / "cryptovol-evaluator")],
                {
                    **common,
                    "METRICS_PORT": str(ports["evaluator"]),
                    "TOPIC_LABELLED": f"predictions.labelled.{run_id}",
                    "CONSUMER_GROUP": f"evaluator-{run_id}",
                    "QUALITY_REFRESH_S": "1",
                    "LAG_INTERVAL_S": "1",
                },
                logs,
            )
        )
        # the exchange drops the first connection and skips sequence numbers, so the
        # reconnect and gap panels have something to show
        exchange_args = (
            f"--port {ports['exchange']} --files {RECORDING} --speed 30 --loop --heartbeat-s 1"
            " --drop-after 150 --drops 1 --skip-every 40 --malformed-every 97"
        )
        exchange_cmd = [str(BIN / "cryptovol-fake-exchange"), *exchange_args.split()]
        procs.append(_start("exchange", exchange_cmd, common, logs))
        _wait_for(
            "the fake exchange", lambda: port_open(ports["exchange"], timeout_s=0.5), 30, procs
        )
        ingest_args = (
            f"--source live --url ws://127.0.0.1:{ports['exchange']} --products BTC-USD"
            f" --metrics-port {ports['ingest']} --spool-dir {tmp / 'spool'}"
        )
        ingest_cmd = [str(BIN / "cryptovol-ingest"), *ingest_args.split()]
        procs.append(_start("ingest", ingest_cmd, common, logs))

        services = {
            "api": ports["api"],
            **{s: ports[s] for s in ("ingest", "featurizer", "consumer", "evaluator")},
        }
        for name, port in services.items():
            _wait_for(
                f"{name} /healthz",
                lambda p=port: _get(f"http://127.0.0.1:{p}/healthz")[0] == 200,
                60,
                procs,
            )

        targets = {s: (p, "http" if s == "api" else "metrics") for s, p in services.items()}
        config = _scrape_config(tmp, targets, _fast_rules(tmp))
        _run_ok([tool("promtool"), "check", "config", str(config)])
        procs.append(
            _start(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{ports['prom']}",
                    "--log.level=warn",
                ],
                common,
                logs,
            )
        )
        prom = f"http://127.0.0.1:{ports['prom']}"
        _wait_for("Prometheus", lambda: _get(prom + "/-/ready")[0] == 200, 60, procs)

        driver = threading.Thread(target=_drive_api, args=(api, stop_traffic), daemon=True)
        driver.start()
        st = Stack(prom, services, procs, stop_traffic)
        wanted = st.must_have()
        missing: set[str] = set()

        def traffic_everywhere() -> bool:
            missing.clear()
            missing.update(wanted - st.series_names())
            return not missing and _has_rates(st)

        try:
            _wait_for("traffic in every service's metrics", traffic_everywhere,
                      TRAFFIC_TIMEOUT_S, procs)
        except AssertionError as exc:
            raise AssertionError(f"series still missing: {sorted(missing)}\n{exc}") from None
        _wait_for("live quality with persistence beside the served model",
                  lambda: bool(st.query('cryptovol_evaluator_pr_auc{role="reference"}')["result"])
                  and bool(st.query('cryptovol_evaluator_pr_auc{role="served"}')["result"]),
                  GRADED_TIMEOUT_S, procs)
        yield st
    finally:
        stop_traffic.set()
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(tmp / "tsdb", ignore_errors=True)


def _has_rates(st: Stack) -> bool:
    """Enough successful scrapes of every target for rate() over the dashboards' windows."""
    scraped = st.query("min(sum_over_time(up[1m]))")["result"]
    if not scraped or float(scraped[0]["value"][1]) < 5:
        return False
    data = st.query('sum(rate(cryptovol_api_requests_total{endpoint="/predict"}[1m]))')
    return bool(data["result"])


def _run_ok(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _expects_data(st: Stack, item: Expr, present: set[str]) -> bool:
    metrics = documented_metrics()
    names = {sel.metric for sel in selectors(item.expr, metrics)} | set(recorded_series(item.expr))
    return bool(names) and names <= present


def test_every_target_is_scraped(stack: Stack) -> None:
    status, body = _get(stack.prometheus_url + "/api/v1/targets")
    targets = json.loads(body)["data"]["activeTargets"]
    assert status == 200 and len(targets) == len(stack.services)
    assert {t["labels"]["service"] for t in targets} == {f"cryptovol-{s}" for s in stack.services}
    for target in targets:
        assert target["health"] == "up", target


def test_services_export_what_the_contract_lists(stack: Stack) -> None:
    missing = stack.must_have() - stack.series_names()
    assert not missing, f"no series under traffic for {sorted(missing)}"
    # the API's `endpoint` label survives the operator's `endpoint` target label
    data = stack.query('cryptovol_api_requests_total{endpoint="/predict",status="200"}')
    assert data["result"] and "exported_endpoint" not in data["result"][0]["metric"]


def test_every_dashboard_query_runs_and_shows_traffic(stack: Stack) -> None:
    present = stack.series_names()
    exprs = dashboard_exprs()
    empty = []
    for item in exprs:
        result = stack.query(item.expr)["result"]
        if _expects_data(stack, item, present) and not result:
            names = [sel.metric for sel in selectors(item.expr, documented_metrics())]
            samples = {n: stack.query(f"count_over_time({n}[1m])")["result"][:1] for n in names}
            empty.append(f"{item.origin}: {item.expr}\n    samples in the last minute: {samples}")
    assert not empty, "queries without data although their metrics have series:\n" + "\n".join(
        empty
    )
    # the panels the SLOs rest on show numbers, not just series
    latency = 'cryptovol_api_request_latency_seconds_bucket{endpoint="/predict"}'
    for expr in (
        f"histogram_quantile(0.99, sum by (le) (rate({latency}[1m])))",
        "sum by (model_variant) (rate(cryptovol_api_spikes_total[1m]))"
        " / sum by (model_variant) (rate(cryptovol_api_rows_scored_total[1m]))",
    ):
        (sample,) = stack.query(expr)["result"]
        assert float(sample["value"][1]) >= 0.0


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    expected = {r.get("alert") or r.get("record") for g in rule_groups() for r in g["rules"]}

    def evaluated() -> list[dict]:
        body = json.loads(_get(stack.prometheus_url + "/api/v1/rules")[1])
        rules = [r for g in body["data"]["groups"] for r in g["rules"]]
        return rules if all(not r["lastEvaluation"].startswith("0001") for r in rules) else []

    _wait_for("one evaluation of every rule", lambda: bool(evaluated()), 30, stack.procs)
    rules = evaluated()
    assert {r["name"] for r in rules} == expected
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    # the SLO recording rules have data under /predict traffic
    present = stack.series_names()
    for record in (
        "cryptovol:api_predict_slow:ratio_rate5m",
        "cryptovol:api_predict_errors:ratio_rate5m",
    ):
        _wait_for(record, lambda r=record: bool(stack.query(r)["result"]), 30, stack.procs)
        assert record in stack.series_names() | present


def test_every_alert_expression_runs_on_real_series(stack: Stack) -> None:
    """Each alert's expression runs; each selector in it, reduced to its exact-match
    labels, finds real series, and each label it matches by regex exists."""
    metrics = documented_metrics()
    present = stack.series_names()
    problems = []
    for item in rule_exprs():
        stack.query(item.expr)  # no error
        for sel in selectors(item.expr, metrics):
            if sel.metric not in present:
                continue  # that service has no series under this traffic (e.g. not running)
            exact = ",".join(f'{k}="{v}"' for k, op, v in sel.matchers if op == "=")
            if not stack.query(f"{sel.metric}{{{exact}}}")["result"]:
                problems.append(f"{item.origin}: no series {sel.metric}{{{exact}}}")
            for label, op, _ in sel.matchers:
                if (
                    op != "="
                    and label not in TARGET_LABELS
                    and not stack.query(f'{sel.metric}{{{label}!=""}}')["result"]
                ):
                    problems.append(f"{item.origin}: {sel.metric} has no label {label}")
    assert not problems, "\n".join(problems)


def test_predictions_flow_end_to_end(stack: Stack) -> None:
    by_model = stack.query(
        "sum by (model_variant, model_version) (cryptovol_consumer_predictions_total)"
    )["result"]
    assert any(
        r["metric"]["model_variant"] == "ml" and float(r["value"][1]) > 0 for r in by_model
    ), by_model
    # the stale-predictions alert reads the real gauge and stays quiet while predictions flow
    stale = next(e.expr for e in rule_exprs() if e.origin == "alert CryptovolPredictionsStale")
    assert stack.query(stale)["result"] == []
    # the lag gauges carry the partition label the lag panel groups by
    for metric in ("cryptovol_featurizer_consumer_lag", "cryptovol_consumer_lag"):
        assert all("partition" in r["metric"] for r in stack.query(metric)["result"])


def test_api_answers_like_its_clients_expect(stack: Stack) -> None:
    api = f"http://127.0.0.1:{stack.services['api']}"
    assert (
        _post_json(api + "/predict", {"rows": [{"ret_mean": 0.05, "ret_std": 0.01, "n": 50}]})
        == 200
    )
    assert _post_json(api + "/predict", {"rows": "not-a-list"}) == 422
    data = stack.query('sum by (reason) (cryptovol_api_errors_total{reason="validation"})')
    assert data["result"], "rejected requests are counted by reason"


def test_model_not_loaded_alert_reads_the_real_gauge(stack: Stack) -> None:
    (sample,) = stack.query("cryptovol_api_model_loaded")["result"]
    assert sample["value"][1] == "1"
    assert sample["metric"]["namespace"] == NAMESPACE
    assert not stack.query("cryptovol_api_model_loaded == 0")["result"]


def test_services_stop_on_sigterm(stack: Stack) -> None:
    """What dumb-init forwards in the images: every service shuts down on SIGTERM.
    uvicorn re-raises the signal after its graceful shutdown, so the API's status is
    -SIGTERM with "Application shutdown complete" logged; the workers exit 0."""
    stack.stop_traffic.set()
    time.sleep(0.2)
    for proc in stack.procs:
        if proc.name not in stack.services:
            continue
        code = _stop(proc)
        if proc.name == "api":
            assert code in (0, -signal.SIGTERM), proc.log_tail()
            assert "Application shutdown complete" in proc.log.read_text(), proc.log_tail()
        else:
            assert code == 0, f"{proc.name} exited {code} on SIGTERM:\n{proc.log_tail()}"
