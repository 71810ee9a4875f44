"""``cryptovol-broker``: a real, single-node Apache Kafka broker for local work.

Provisions the pinned Apache Kafka release (the one Strimzi deploys in the
cluster) from Maven Central with ``mvn`` into a cache outside the repository,
formats KRaft storage, runs one combined broker/controller bound to 127.0.0.1,
creates the pipeline's topics and prints one line when ready. SIGTERM/SIGINT
stop it and leave nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from pydantic import Field

from cryptovol.devtools.net import free_port, port_open
from cryptovol.runtime.settings import ServiceSettings

KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.25.4"  # the log4j-core that kafka 4.3.1 depends on
CACHE_DIR = Path(os.environ.get("CRYPTOVOL_CACHE", Path.home() / ".cache" / "cryptovol"))
READY_TIMEOUT_S = 90.0


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


class BrokerError(RuntimeError):
    """Something the user must fix; the message says what and how."""


class BrokerSettings(ServiceSettings):
    """The local broker's addresses (environment variables; flags override)."""

    service_name: str = "broker"
    kafka_listen_host: str = Field(
        "127.0.0.1", description="address the broker listens on; 0.0.0.0 means every interface")
    kafka_advertised_host: str = Field(
        "", description="host clients are told to connect to; default: the listen host")


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets


def advertised_host(listen_host: str, advertised: str | None) -> str:
    """The host clients are told to use. A broker listening on every interface
    cannot guess which address its clients reach it at, so it must be told."""
    if advertised:
        return advertised
    if listen_host in WILDCARD_HOSTS:
        raise BrokerError(
            f"the broker listens on every interface ({listen_host or '*'}) but has no address "
            "to advertise: set KAFKA_ADVERTISED_HOST (or --advertised-host) to the address "
            "clients reach this machine at, e.g. KAFKA_ADVERTISED_HOST=192.168.1.20"
        )
    return listen_host


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    return CACHE_DIR / f"kafka-{version}"


def _pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_VERSION}", version),
        # route the broker's slf4j logging into log4j2 so errors reach our log file
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ]
    dep_xml = "\n".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return textwrap.dedent(f"""\
        <project xmlns="http://maven.apache.org/POM/4.0.0">
          <modelVersion>4.0.0</modelVersion>
          <groupId>local.cryptovol</groupId><artifactId>kafka-broker</artifactId>
          <version>{version}</version>
          <dependencies>{dep_xml}</dependencies>
        </project>
        """)


_LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def _require(tool: str, advice: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise BrokerError(f"`{tool}` was not found on PATH. {advice}")
    return path


def provision(version: str = KAFKA_VERSION, quiet: bool = False) -> Path:
    """Fetch the broker jars once; later calls return the cached folder at once."""
    home = kafka_home(version)
    libs, marker = home / "libs", home / ".complete"
    if marker.exists():
        return home
    _require("java", "Install Java 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`).")
    mvn = _require("mvn", "Install Apache Maven (e.g. `apt-get install maven`).")
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kafka-fetch-", dir=home))
    try:
        (work / "pom.xml").write_text(_pom(version))
        if not quiet:
            print(f"fetching Apache Kafka {version} from Maven Central into {libs} ...",
                  file=sys.stderr, flush=True)
        proc = subprocess.run(
            [mvn, "-B", "-q", "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={work / 'libs'}"],
            cwd=work, capture_output=quiet, text=True,
        )
        if proc.returncode != 0:
            detail = (proc.stdout or "")[-2000:] if quiet else "(see the Maven output above)"
            raise BrokerError(
                f"mvn could not fetch org.apache.kafka:kafka_{SCALA_VERSION}:{version} from "
                f"Maven Central {detail}\nCheck network access to Maven Central (or a mirror in "
                "~/.m2/settings.xml), or point KAFKA_BOOTSTRAP_SERVERS at an existing broker."
            )
        if libs.exists():
            shutil.rmtree(libs)
        (work / "libs").rename(libs)
        (home / "log4j2.yaml").write_text(_LOG4J2)
        marker.write_text(version + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return home


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the broker if the Python process that started it dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalBroker:
    """A running single-node KRaft broker; use as a context manager or call
    :meth:`start` and :meth:`stop`."""

    def __init__(self, port: int = 0, data_dir: Path | None = None, heap_mb: int = 512,
                 listen_host: str = "127.0.0.1", advertised: str | None = None) -> None:
        self.listen_host = listen_host
        self.advertised_host = advertised_host(listen_host, advertised)
        # where this process finds the listener: loopback when it listens everywhere
        self.local_host = "127.0.0.1" if listen_host in WILDCARD_HOSTS else listen_host
        self.port = port or free_port()
        self.controller_port = free_port()
        self._own_data = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="cryptovol-kafka-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.heap_mb = heap_mb
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "broker.log"

    @classmethod
    def from_settings(cls, settings: BrokerSettings, port: int | None = None,
                      data_dir: Path | None = None) -> LocalBroker:
        return cls(port=port or settings.kafka_port, data_dir=data_dir,
                   listen_host=settings.kafka_listen_host,
                   advertised=settings.kafka_advertised_host or None)

    @property
    def bootstrap(self) -> str:
        """The address clients use (the advertised one)."""
        return host_port(self.advertised_host, self.port)

    def _write_config(self) -> Path:
        config = self.data_dir / "server.properties"
        config.write_text(textwrap.dedent(f"""\
            process.roles=broker,controller
            node.id=1
            controller.quorum.voters=1@127.0.0.1:{self.controller_port}
            listeners=PLAINTEXT://{host_port(self.listen_host, self.port)},CONTROLLER://127.0.0.1:{self.controller_port}
            advertised.listeners=PLAINTEXT://{self.bootstrap}
            controller.listener.names=CONTROLLER
            listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
            log.dirs={self.data_dir / "logs"}
            num.partitions=3
            offsets.topic.replication.factor=1
            offsets.topic.num.partitions=6
            transaction.state.log.replication.factor=1
            transaction.state.log.min.isr=1
            share.coordinator.state.topic.replication.factor=1
            share.coordinator.state.topic.min.isr=1
            group.initial.rebalance.delay.ms=0
            auto.create.topics.enable=true
            log.retention.hours=24
            """))
        return config

    def _java(self, home: Path, *args: str) -> list[str]:
        return [
            _require("java", "Install Java 17 or newer."),
            f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
            f"-Dlog4j2.configurationFile={home / 'log4j2.yaml'}",
            "-cp", str(home / "libs" / "*"), *args,
        ]

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> LocalBroker:
        if port_open(self.port, host=self.local_host):
            raise BrokerError(
                f"port {self.port} on {self.local_host} is already in use: another broker may be "
                "running. Stop it, or choose another port with KAFKA_PORT."
            )
        home = provision()
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = _kafka_cluster_id()
            subprocess.run(
                self._java(home, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                           "-c", str(config), "--ignore-formatted"),
                check=True, capture_output=True,
            )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self._java(home, "kafka.Kafka", str(config)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, start_new_session=True,
        )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from cryptovol.runtime.kafka import broker_reachable

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                self.stop()
                raise BrokerError(f"the Kafka broker exited during start-up:\n{tail}")
            if port_open(self.port, host=self.local_host) and broker_reachable(
                    self.bootstrap, timeout_s=2.0):
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"the Kafka broker did not become ready within {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 20.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kafka_cluster_id() -> str:
    """A random cluster id in Kafka's format (base64url of a UUID, no padding). Never one
    starting with "-": the storage tool would read it as an option and fail."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptovol-broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["run", "fetch"], default="run",
                        help="run the broker (default) or only fetch its jars into the cache")
    parser.add_argument("--port", type=int, help="listener port (default KAFKA_PORT or 9092)")
    parser.add_argument("--data-dir", type=Path,
                        help="keep broker data here across restarts (default: a temporary folder)")
    parser.add_argument("--listen-host", help="address to listen on (KAFKA_LISTEN_HOST, default "
                        "127.0.0.1; 0.0.0.0 serves other hosts too)")
    parser.add_argument("--advertised-host", help="address clients are told to connect to "
                        "(KAFKA_ADVERTISED_HOST, default: the listen host)")
    args = parser.parse_args(argv)
    flags = {"kafka_listen_host": args.listen_host, "kafka_advertised_host": args.advertised_host}
    settings = BrokerSettings(**{k: v for k, v in flags.items() if v is not None})
    try:
        if args.command == "fetch":
            print(f"Apache Kafka {KAFKA_VERSION} jars in {provision()}", flush=True)
            return 0
        if settings.kafka_bootstrap_servers:
            print(f"cryptovol-broker: KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} "
                  "names an external broker; nothing to provision.", flush=True)
            return 0
        return _run(settings, args.port or settings.kafka_port, args.data_dir)
    except BrokerError as exc:
        print(f"cryptovol-broker: {exc}", file=sys.stderr, flush=True)
        return 2


def _run(settings: BrokerSettings, port: int, data_dir: Path | None) -> int:
    from cryptovol.runtime.kafka import ensure_topics
    from cryptovol.runtime.lifecycle import Shutdown

    shutdown = Shutdown()
    started = time.monotonic()
    broker = LocalBroker.from_settings(settings, port=port, data_dir=data_dir)
    broker.start()
    try:
        topic_settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap})
        ensure_topics(topic_settings, [settings.topic_raw, settings.topic_features,
                                       settings.topic_predictions])
        print(f"cryptovol-broker ready: Apache Kafka {KAFKA_VERSION} (KRaft) on {broker.bootstrap} "
              f"(listening on {host_port(broker.listen_host, broker.port)}) in "
              f"{time.monotonic() - started:.1f}s; data in {broker.data_dir}", flush=True)
        while not shutdown.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                print(f"cryptovol-broker: the broker exited; see {broker.log_path}",
                      file=sys.stderr, flush=True)
                return 1
    finally:
        broker.stop()
        print("cryptovol-broker stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
