"""``cryptovol-stack`` (``make run``): the whole pipeline as local processes.

Starts the local Kafka broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names one),
then every service described by a ``services/*/run.toml`` file, in ``order``,
each as its own process with its log lines prefixed. It waits until each is
healthy, prints the URLs, then a live status line; Ctrl-C stops everything.

A service plugs in by adding its ``run.toml``; this file never changes for it::

    name = "api"                      # log prefix
    order = 40                        # start order (lower first)
    module = "cryptovol_api.main"     # skipped while this does not exist
    command = ["cryptovol-api"]       # "{source}", "{repo}" and ports are substituted
    health = "http://127.0.0.1:{API_PORT}/health"
    [ports]                           # the ports it listens on, named for every run file
    API_PORT = 8000
    [urls]                            # printed once healthy
    api = "http://127.0.0.1:{API_PORT}"
    [env]                             # extra environment
    API_PORT = "{API_PORT}"
    [status]                          # rate shown in the status line
    label = "predictions/s"
    metrics = "http://127.0.0.1:{API_PORT}/metrics"
    counter = "cryptovol_api_rows_scored_total"

Ports are named across run files, so one service can point at another's
(``API_URL = "http://127.0.0.1:{API_PORT}"``). ``--free-ports`` gives every
named port a free one instead of its usual number: a second stack, or a stack
beside a test run, on the same machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptovol.devtools.broker import KAFKA_VERSION, BrokerError, BrokerSettings, LocalBroker
from cryptovol.devtools.net import free_port

COINBASE_HOST = ("advanced-trade-ws.coinbase.com", 443)
COLORS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"


@dataclass
class ServiceSpec:
    name: str
    order: int
    command: list[str]
    module: str | None = None
    health: str | None = None
    urls: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ServiceSpec:
        data = tomllib.loads(path.read_text())
        return cls(
            name=data["name"], order=int(data.get("order", 50)), command=list(data["command"]),
            module=data.get("module"), health=data.get("health"), urls=data.get("urls", {}),
            env={k: str(v) for k, v in data.get("env", {}).items()},
            status=data.get("status", {}),
            ports={k: int(v) for k, v in data.get("ports", {}).items()},
        )

    def resolved(self, values: dict[str, object]) -> ServiceSpec:
        """The spec with ``{name}`` placeholders (ports, source, repo) filled in."""

        def fill(text: str) -> str:
            try:
                return text.format_map(values)
            except KeyError as exc:
                raise ValueError(f"{self.name}/run.toml names an unknown value {exc}") from None

        return replace(
            self, command=[fill(c) for c in self.command],
            health=fill(self.health) if self.health else None,
            urls={k: fill(v) for k, v in self.urls.items()},
            env={k: fill(v) for k, v in self.env.items()},
            status={k: fill(v) for k, v in self.status.items()},
        )

    def available(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None


def assign_ports(specs: list[ServiceSpec], free: bool = False) -> dict[str, int]:
    """Every named port of ``specs``: its usual number, or a free one."""
    ports: dict[str, int] = {}
    for spec in specs:
        for name, usual in spec.ports.items():
            if name in ports:
                raise ValueError(f"port {name} is named by two run files")
            ports[name] = free_port() if free else usual
    return ports


def discover(repo: Path) -> list[ServiceSpec]:
    specs = [ServiceSpec.load(p) for p in sorted(repo.glob("services/*/run.toml"))]
    return sorted(specs, key=lambda s: s.order)


def coinbase_reachable(timeout_s: float = 3.0) -> bool:
    try:
        with socket.create_connection(COINBASE_HOST, timeout=timeout_s):
            return True
    except OSError:
        return False


def choose_source(requested: str, say) -> str:
    if requested in ("live", "replay"):
        return requested
    if coinbase_reachable():
        return "live"
    say("!" * 72)
    say("SOURCE=auto: Coinbase (advanced-trade-ws.coinbase.com:443) is unreachable from")
    say("this machine. Replaying the bundled recordings in data/coinbase-ticker instead.")
    say("!" * 72)
    return "replay"


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEInfa]+)")


def counter_total(metrics_url: str, counter: str) -> float | None:
    """Sum of all samples of ``counter`` (any labels) on a /metrics page."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2.0) as response:
            text = response.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == counter:
            total += float(match.group(3))
    return total


class Process:
    """A child process whose output lines are printed with a coloured prefix."""

    def __init__(self, spec: ServiceSpec, argv: list[str], env: dict[str, str], color: str,
                 printer: Printer) -> None:
        self.spec = spec
        self.printer = printer
        self.prefix = f"{color}{spec.name:>10} |{RESET} "
        self.popen = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            if '"level": "error"' in line or '"level":"error"' in line:
                self.printer.last_error = f"{self.spec.name}: {line[-160:]}"
            self.printer.say(self.prefix + line)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Printer:
    """Serialises output from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_error = "none"

    def say(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptovol-stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", help="comma-separated service names to run "
                        "(default: every available one; 'none' runs only the broker)")
    parser.add_argument("--source", default=os.environ.get("SOURCE", "auto"),
                        choices=["auto", "live", "replay"], help="market data source (env SOURCE)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop by itself after this many seconds (0: until Ctrl-C)")
    parser.add_argument("--status-every", type=float, default=5.0, help="status line period (s)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--free-ports", action="store_true",
                        help="run every service on a free port instead of its usual one")
    args = parser.parse_args(argv)

    printer = Printer()
    say = printer.say
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    specs = discover(args.repo)
    ports = assign_ports(specs, free=args.free_ports)  # every service's, run or not
    specs = [s for s in specs if s.available()]
    if args.services is not None:
        wanted = {n.strip() for n in args.services.split(",") if n.strip() and n != "none"}
        specs = [s for s in specs if s.name in wanted]

    broker = None
    processes: list[Process] = []
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if bootstrap:
            say(f"using the Kafka broker at {bootstrap}")
        else:
            from cryptovol.runtime.kafka import ensure_topics

            settings = BrokerSettings(service_name="stack")
            started = time.monotonic()
            broker = LocalBroker.from_settings(settings).start()
            bootstrap = broker.bootstrap
            ensure_topics(settings.model_copy(update={"kafka_bootstrap_servers": bootstrap}),
                          [settings.topic_raw, settings.topic_features, settings.topic_predictions])
            say(f"broker ready: Apache Kafka {KAFKA_VERSION} on {bootstrap} "
                f"({time.monotonic() - started:.1f}s; data in {broker.data_dir})")

        source = choose_source(args.source, say) if specs else args.source
        values = {**ports, "source": source, "repo": args.repo}
        specs = [spec.resolved(values) for spec in specs]
        for i, spec in enumerate(specs):
            if stop.is_set():
                break
            env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SOURCE": source,
                   "PYTHONUNBUFFERED": "1", **spec.env}
            argv = list(spec.command)
            # the venv's own commands first, even when it is not on PATH
            search = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
            argv[0] = shutil.which(argv[0], path=search) or argv[0]
            processes.append(Process(spec, argv, env, COLORS[i % len(COLORS)], printer))
            if not _wait_healthy(processes[-1], stop, say):
                say(f"{spec.name} did not become healthy; stopping")
                return 1

        _print_urls(specs, bootstrap, say)
        return _status_loop(processes, specs, printer, stop, args)
    except BrokerError as exc:
        say(f"cryptovol-stack: {exc}")
        return 2
    finally:
        for process in reversed(processes):
            process.stop()
        if broker is not None:
            broker.stop()
        say("stopped: every process has exited")


def _wait_healthy(process: Process, stop: threading.Event, say, timeout_s: float = 90.0) -> bool:
    spec = process.spec
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        if process.popen.poll() is not None:
            say(f"{spec.name} exited with code {process.popen.returncode}")
            return False
        if spec.health is None or http_ok(spec.health):
            say(f"{spec.name} healthy")
            return True
        time.sleep(0.5)
    if not stop.is_set():
        say(f"{spec.name} not ready after {timeout_s:.0f}s: {_body(spec.health)}")
    return stop.is_set()


def _body(url: str | None) -> str:
    """What a health endpoint says, whatever its status code."""
    if url is None:
        return ""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.read().decode(errors="replace")[:500]
    except urllib.error.HTTPError as error:
        return error.read().decode(errors="replace")[:500]
    except OSError as error:
        return str(error)


def _print_urls(specs: list[ServiceSpec], bootstrap: str, say) -> None:
    say("-" * 72)
    say(f"  kafka      {bootstrap}")
    for spec in specs:
        for label, url in spec.urls.items():
            say(f"  {spec.name:<10} {label:<8} {url}")
    say("-" * 72)


def _status_loop(processes: list[Process], specs: list[ServiceSpec], printer: Printer,
                 stop: threading.Event, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.duration if args.duration else None
    previous: dict[str, tuple[float, float]] = {}
    while not stop.wait(args.status_every):
        for process in processes:
            if process.popen.poll() is not None:
                printer.say(f"{process.spec.name} exited with code {process.popen.returncode}")
                return 1
        parts = []
        for spec in specs:
            if not spec.status:
                continue
            now, total = time.monotonic(), counter_total(spec.status["metrics"],
                                                         spec.status["counter"])
            if total is None:
                parts.append(f"{spec.status['label']} ?")
                continue
            last = previous.get(spec.name)
            rate = (total - last[1]) / (now - last[0]) if last else 0.0
            previous[spec.name] = (now, total)
            parts.append(f"{spec.status['label']} {rate:,.1f}")
        printer.say(f"status: {' | '.join(parts) or 'broker only'} | last error: "
                    f"{printer.last_error}")
        if deadline and time.monotonic() >= deadline:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
