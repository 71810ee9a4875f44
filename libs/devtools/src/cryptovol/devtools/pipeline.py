"""The whole pipeline as processes on 127.0.0.1, for fault, soak and scale runs.

A private Kafka broker (its own port and data folder), the fake exchange (in
this process, so a run knows exactly what was sent and can stall it), and the
services as child processes with their logs in files: ingest (live mode,
connected to the fake exchange), one or more featurizer replicas, the consumer
and the API. Every child gets free ports; any of them can be SIGKILLed and
started again, the broker too; :meth:`LocalPipeline.stop` ends every process
it started and checks that none is left.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from cryptovol.devtools.broker import LocalBroker
from cryptovol.devtools.fake_exchange import FakeExchangeThread, Faults
from cryptovol.devtools.ledger import LedgerReport
from cryptovol.devtools.ledger.cli import LedgerSettings, collect, wait_drained
from cryptovol.devtools.net import free_port
from cryptovol.devtools.products import product_names
from cryptovol.runtime.kafka import ensure_topics
from cryptovol.runtime.settings import ServiceSettings

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 180.0  # the API imports scikit-learn: slow on a busy machine


def http_json(url: str, timeout_s: float = 2.0) -> dict | None:
    """The JSON body ``url`` answers with, whatever the status (None when unreachable)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return orjson.loads(error.read())
        except orjson.JSONDecodeError:
            return None
    except (OSError, orjson.JSONDecodeError):
        return None


def http_status(url: str, timeout_s: float = 2.0) -> int | None:
    """The status code ``url`` answers with (None when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@dataclass
class Service:
    """One child process of the pipeline."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int  # its HTTP port (metrics and health, or the API)
    log_path: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    pids: list[int] = field(default_factory=list)  # every process it ever ran

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        return f"{self.base_url}/readyz"

    def start(self) -> Service:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        self.pids.append(self.proc.pid)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self.alive and http_status(self.ready_url) == 200

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds until ``/readyz`` answers 200; raises if the process exits or
        the time is up."""
        started = time.monotonic()
        while not self.ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - started

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead: it only waits for its parent to read its status
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@dataclass
class PipelineConfig:
    """What runs: products, speed, partitions, replicas, and environment extras."""

    workdir: Path
    repo: Path = field(default_factory=Path.cwd)
    products: int | Sequence[str] = 3
    files: Sequence[Path] = ()
    speed: float = math.inf
    loop: bool = False
    max_ticks: int | None = None  # the exchange stops after this many
    partitions: int = 3
    featurizer_replicas: int = 1
    product_shift_us: int = 5_000
    faults: Faults | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # for every service
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # by name

    def product_ids(self) -> list[str]:
        if isinstance(self.products, int):
            return product_names(self.products)
        return list(self.products)


class LocalPipeline:
    """Start with :meth:`start`, stop with :meth:`stop` (or use ``with``)."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.workdir = config.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.products = config.product_ids()
        self.broker = LocalBroker(data_dir=self.workdir / "kafka")
        self.exchange: FakeExchangeThread | None = None
        self.services: dict[str, Service] = {}
        self.broker_restarts = 0

    # -- set-up ----------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def settings(self) -> ServiceSettings:
        return ServiceSettings(kafka_bootstrap_servers=self.bootstrap,
                               kafka_partitions=self.config.partitions)

    def _common_env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_PARTITIONS": str(self.config.partitions),
            "METRICS_HOST": "127.0.0.1",
            "DATA_DIR": str(self.workdir / "data"),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **self.config.env,
        }

    def _service(self, name: str, command: str, env: dict[str, str]) -> Service:
        port = free_port()
        base = {**self._common_env(), "METRICS_PORT": str(port)}
        if command == "cryptovol-api":
            base.update({"API_HOST": "127.0.0.1", "API_PORT": str(port)})
        overrides = self.config.service_env
        full = {**base, **env, **overrides.get(name.split("-")[0], {}), **overrides.get(name, {})}
        log_path = self.workdir / "logs" / f"{name}.log"
        return Service(name, [str(BIN / command)], full, port, log_path)

    def _define_services(self) -> None:
        assert self.exchange is not None
        api = self._service("api", "cryptovol-api", {
            "MODELS_DIR": str(self.config.repo / "models" / "artifacts")})
        self.services["api"] = api
        for k in range(self.config.featurizer_replicas):
            name = "featurizer" if self.config.featurizer_replicas == 1 else f"featurizer-{k + 1}"
            self.services[name] = self._service(name, "cryptovol-featurizer", {})
        self.services["consumer"] = self._service("consumer", "cryptovol-consumer", {
            "API_URL": api.base_url, "LOG_PREDICTIONS": "true",
            "PREDICTION_LOG_DIR": str(self.prediction_dir)})
        self.services["ingest"] = self._service("ingest", "cryptovol-ingest", {
            "SOURCE": "live", "COINBASE_WS_URL": self.exchange.url,
            "PRODUCTS": ",".join(self.products)})

    @property
    def prediction_dir(self) -> Path:
        return self.workdir / "predictions"

    def start(self) -> LocalPipeline:
        try:
            self.broker.start()
            ensure_topics(self.settings(), [self.settings().topic_raw,
                                            self.settings().topic_features,
                                            self.settings().topic_predictions])
            files = list(self.config.files) or [self.config.repo / "data" / "coinbase-ticker"]
            self.exchange = FakeExchangeThread(
                files=files, speed=self.config.speed, loop=self.config.loop,
                max_ticks=self.config.max_ticks,
                products=len(self.products), product_shift_us=self.config.product_shift_us,
                faults=self.config.faults)
            self.exchange.start()
            self._define_services()
            for service in self.services.values():  # downstream first: nothing waits long
                service.start()
                service.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LocalPipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------------
    def featurizers(self) -> list[Service]:
        return [s for n, s in self.services.items() if n.startswith("featurizer")]

    def restart(self, name: str, down_s: float = 0.0, sig: int = signal.SIGKILL) -> float:
        """Kill ``name`` with ``sig``, wait ``down_s``, start it again; seconds until
        it is ready again, counted from the kill."""
        service = self.services[name]
        killed = time.monotonic()
        service.kill(sig)
        time.sleep(down_s)
        service.start()
        service.wait_ready()
        return time.monotonic() - killed

    def restart_broker(self, down_s: float = 0.0, sig: int = signal.SIGKILL) -> float:
        """Kill the broker, keep its data, start it again on the same port."""
        killed = time.monotonic()
        proc = self.broker.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(60)
        self.broker.process = None
        time.sleep(down_s)
        self.broker.start()
        self.broker_restarts += 1
        return time.monotonic() - killed

    def stall_exchange(self, seconds: float) -> None:
        assert self.exchange is not None
        self.exchange.stall_for(seconds)

    # -- state -----------------------------------------------------------------------------------
    def health(self, name: str) -> dict | None:
        return http_json(f"{self.services[name].base_url}/health")

    def wait_ingested(self, timeout_s: float = 600.0) -> bool:
        """Wait until the exchange has sent its whole feed and the ingest has every
        tick acknowledged by Kafka (its spool is empty)."""
        assert self.exchange is not None
        deadline = time.monotonic() + timeout_s
        if not self.exchange.wait_finished(timeout_s):
            return False
        while time.monotonic() < deadline:
            health = self.health("ingest") or {}
            if health.get("spool_depth") == 0 and health.get("kafka") == "publishing":
                return True
            time.sleep(0.5)
        return False

    def ledger_settings(self) -> LedgerSettings:
        return LedgerSettings(kafka_bootstrap_servers=self.bootstrap,
                              prediction_log_dir=self.prediction_dir,
                              **self._ledger_overrides())

    def _ledger_overrides(self) -> dict[str, object]:
        """Settings the services were given that change what the ledger expects."""
        env = {**self.config.env, **self.config.service_env.get("featurizer", {}),
               **self.config.service_env.get("consumer", {})}
        names = {"EMIT_INTERVAL_MS": "emit_interval_ms", "PREDICT_WARMUP": "predict_warmup",
                 "FEATURE_GAP_S": "feature_gap_s", "FEATURE_GRACE_S": "feature_grace_s",
                 "FEATURE_JUMP_S": "feature_jump_s"}
        return {field: env[name] for name, field in names.items() if name in env}

    def ledger(self, wait_s: float = 180.0, drained: bool = True,
               products: frozenset[str] | None = None) -> LedgerReport:
        """Wait (up to ``wait_s``) for the stages to catch up, then settle the ledger."""
        settings = self.ledger_settings()
        wait_drained(settings, wait_s, say=lambda message: None)
        return collect(settings, drained=drained, products=products)

    def unhealthy(self) -> dict[str, int | None]:
        """Services that are not running or whose ``/readyz`` does not answer 200."""
        out = {}
        for name, service in self.services.items():
            status = http_status(service.ready_url) if service.alive else None
            if status != 200:
                out[name] = status
        return out

    def all_pids(self) -> list[int]:
        pids = [pid for s in self.services.values() for pid in s.pids]
        return pids

    def stop(self) -> dict[str, int | None]:
        """Stop every process (ingest first, broker last); their exit codes."""
        codes: dict[str, int | None] = {}
        for name in ("ingest", "consumer", *(s.name for s in self.featurizers()), "api"):
            if name in self.services:
                codes[name] = self.services[name].stop()
        if self.exchange is not None:
            self.exchange.stop()
        broker_pid = self.broker.process.pid if self.broker.process else None
        self.broker.stop()
        left = [pid for pid in [*self.all_pids(), broker_pid] if pid and pid_alive(pid)]
        if left:
            raise RuntimeError(f"processes left behind: {left}")
        return codes
