"""``cryptovol-broker`` and ``cryptovol-stack`` as a user runs them: real
processes, real signals, nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from cryptovol.devtools.net import free_port, port_open
from cryptovol.runtime.kafka import broker_reachable, make_consumer
from cryptovol.runtime.settings import ServiceSettings

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[3]


def _java_children_of(marker: str) -> list[str]:
    """Broker JVMs whose command line names ``marker`` (our data folder or port)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if "kafka.Kafka" in args and marker in args:
            found.append(args)
    return found


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO)


def _read_until(proc: subprocess.Popen, pattern: str, timeout_s: float) -> tuple[str, list[str]]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if re.search(pattern, line):
            return line, lines
    raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(lines))


def test_broker_starts_creates_topics_and_leaves_nothing_after_ctrl_c(tmp_path):
    port = free_port()
    data_dir = tmp_path / "kafka"
    proc = _start([str(BIN / "cryptovol-broker"), "--port", str(port), "--data-dir", str(data_dir)],
                  {"KAFKA_BOOTSTRAP_SERVERS": ""})
    try:
        ready, _ = _read_until(proc, r"cryptovol-broker ready", 120)
        seconds = float(re.search(r"in ([0-9.]+)s", ready).group(1))
        print(f"broker ready in {seconds:.1f}s")  # reported in docs/performance.md
        assert f"127.0.0.1:{port}" in ready
        settings = ServiceSettings(kafka_bootstrap_servers=f"127.0.0.1:{port}")
        consumer = make_consumer(settings, group_id=None)
        topics = consumer.topics()
        consumer.close()
        assert {"ticks.raw", "ticks.features", "predictions.log", "ticks.raw.dlq"} <= topics
        assert _java_children_of(str(data_dir))
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    assert _java_children_of(str(data_dir)) == []
    assert not broker_reachable(f"127.0.0.1:{port}", timeout_s=1)


def test_broker_with_external_bootstrap_provisions_nothing():
    result = subprocess.run([str(BIN / "cryptovol-broker")], capture_output=True, text=True,
                            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092"},
                            timeout=30)
    assert result.returncode == 0
    assert "external broker" in result.stdout
    assert _java_children_of("kafka.example") == []


def test_broker_refuses_a_busy_port_with_a_clear_message(kafka_broker):
    result = subprocess.run([str(BIN / "cryptovol-broker"), "--port", str(kafka_broker.port)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": ""})
    assert result.returncode == 2
    assert "already in use" in result.stderr


def test_missing_java_is_explained(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "CRYPTOVOL_CACHE": str(tmp_path / "cache"),
           "KAFKA_BOOTSTRAP_SERVERS": ""}
    result = subprocess.run([sys.executable, "-m", "cryptovol.devtools.broker", "fetch"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "`java` was not found" in result.stderr and "Install Java" in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_stack_with_only_the_broker_runs_reports_and_stops_cleanly(stop_signal):
    port = free_port()
    proc = _start([str(BIN / "cryptovol-stack"), "--services", "none", "--status-every", "0.5"],
                  {"KAFKA_PORT": str(port), "KAFKA_BOOTSTRAP_SERVERS": ""})
    try:
        ready, _ = _read_until(proc, r"broker ready: Apache Kafka", 120)
        data_dir = re.search(r"data in (\S+)\)", ready).group(1)
        assert _java_children_of(data_dir)
        _read_until(proc, r"^status: broker only", 30)
        assert broker_reachable(f"127.0.0.1:{port}", timeout_s=5)
    finally:
        proc.send_signal(stop_signal)
        assert proc.wait(60) == 0
    rest = proc.stdout.read() if proc.stdout else ""
    assert "stopped: every process has exited" in rest
    assert _java_children_of(data_dir) == []
    assert not broker_reachable(f"127.0.0.1:{port}", timeout_s=1)


def test_broker_listens_and_advertises_where_it_is_told(tmp_path):
    """KAFKA_LISTEN_HOST / KAFKA_ADVERTISED_HOST, on a second loopback address so
    that the test stays on this machine: clients reach it there and are told to
    come back there, and nothing listens on 127.0.0.1."""
    port = free_port()
    data_dir = tmp_path / "kafka"
    proc = _start([str(BIN / "cryptovol-broker"), "--port", str(port), "--data-dir", str(data_dir)],
                  {"KAFKA_BOOTSTRAP_SERVERS": "", "KAFKA_LISTEN_HOST": "127.0.0.2",
                   "KAFKA_ADVERTISED_HOST": "127.0.0.2"})
    try:
        ready, _ = _read_until(proc, r"cryptovol-broker ready", 120)
        assert f"on 127.0.0.2:{port} (listening on 127.0.0.2:{port})" in ready
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.2:{port}")
        try:
            brokers = admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        assert [(b["host"], b["port"]) for b in brokers] == [("127.0.0.2", port)]
        assert port_open(port, host="127.0.0.2") and not port_open(port)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    assert _java_children_of(str(data_dir)) == []


def test_listening_everywhere_needs_an_address_to_advertise():
    result = subprocess.run([str(BIN / "cryptovol-broker"), "--listen-host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": ""})
    assert result.returncode == 2
    assert "KAFKA_ADVERTISED_HOST" in result.stderr and "every interface" in result.stderr
