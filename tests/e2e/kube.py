"""kubectl and helm for the e2e: commands, bounded waits that explain themselves on failure,
port-forwards, and the diagnostics dumped when a step fails."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CRYPTOVOL_CACHE", Path.home() / ".cache" / "cryptovol"))
BARE_KUBECONFIG = CACHE / "bare" / "kubeconfig"


class StepFailed(RuntimeError):
    """A check did not hold; the message says what was expected and what was seen."""


def log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check: Callable[[], Any], timeout_s: float,
               interval_s: float = 2.0) -> Any:
    """Poll `check` until it returns something truthy; StepFailed with the last value or
    error after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise StepFailed(f"{what}: not after {timeout_s:.0f} s (last: {last!r})")
        time.sleep(interval_s)


@dataclass
class Kube:
    kubeconfig: str | None  # None: the current context of the user's kubeconfig
    kubectl_bin: str
    helm_bin: str
    namespace: str = "cryptovol"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        return env

    def run(self, args: list[str], *, timeout: float = 120, check: bool = True,
            input_text: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env=self._env(), input=input_text)
        if check and proc.returncode != 0:
            raise StepFailed(f"{' '.join(args[:6])} ... exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
        return proc

    def kubectl(self, *args: str, namespace: str | None = None, **kw: Any) -> str:
        ns = ["-n", namespace or self.namespace]
        return self.run([self.kubectl_bin, *ns, *args], **kw).stdout

    def helm(self, *args: str, timeout: float = 600, **kw: Any) -> str:
        return self.run([self.helm_bin, "-n", self.namespace, *args], timeout=timeout,
                        **kw).stdout

    def json(self, *args: str, namespace: str | None = None) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json", namespace=namespace))

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        self.kubectl("apply", "-f", "-", namespace=namespace, input_text=manifest)

    def rollout(self, kind_name: str, timeout_s: int = 300, namespace: str | None = None) -> None:
        self.kubectl("rollout", "status", kind_name, f"--timeout={timeout_s}s",
                     namespace=namespace, timeout=timeout_s + 30)

    def pods(self, selector: str, namespace: str | None = None) -> list[dict]:
        return self.json("get", "pods", "-l", selector, namespace=namespace)["items"]

    def diagnose(self, namespaces: tuple[str, ...]) -> None:
        """Print pods, recent events and the logs of every pod that is not Ready."""
        for ns in namespaces:
            print(f"\n===== pods in {ns}", file=sys.stderr)
            print(self.kubectl("get", "pods", "-o", "wide", namespace=ns, check=False),
                  file=sys.stderr)
            print(f"===== events in {ns}", file=sys.stderr)
            events = self.kubectl("get", "events", "--sort-by=.lastTimestamp", namespace=ns,
                                  check=False)
            print("\n".join(events.splitlines()[-30:]), file=sys.stderr)
            with contextlib.suppress(StepFailed, json.JSONDecodeError, subprocess.SubprocessError):
                for pod in self.json("get", "pods", namespace=ns)["items"]:
                    if _ready(pod):
                        continue
                    name = pod["metadata"]["name"]
                    print(f"===== logs of {ns}/{name}", file=sys.stderr)
                    print(self.kubectl("logs", name, "--all-containers", "--tail=40",
                                       namespace=ns, check=False), file=sys.stderr)
                    print(self.kubectl("logs", name, "--all-containers", "--tail=20",
                                       "--previous", namespace=ns, check=False),
                          file=sys.stderr)

    @contextlib.contextmanager
    def port_forward(self, target: str, remote_port: int,
                     namespace: str | None = None) -> Iterator[int]:
        """`kubectl port-forward TARGET LOCAL:REMOTE` on a free local port; yields the port."""
        port = free_port()
        proc = subprocess.Popen(
            [self.kubectl_bin, "-n", namespace or self.namespace, "port-forward", target,
             f"{port}:{remote_port}", "--address", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self._env())
        try:
            wait_until(f"port-forward {target} {port}:{remote_port}",
                       lambda: proc.poll() is None and _listening(port), 30, 0.2)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pods_ready(pods: list[dict]) -> bool:
    return bool(pods) and all(_ready(p) for p in pods)


def http_json(url: str, body: dict | None = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)
