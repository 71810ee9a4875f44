"""`make e2e`: the four user actions of the README, executed on a real cluster.

On the bare cluster (`make cluster-up K8S_PROVIDER=bare`), or else the current kube context:
build the service images from the repository's Dockerfile and load them into the cluster,
run the fake exchange beside the release, `helm upgrade --install` the chart, and prove:

- every pod Ready, rows scored by the API and predictions on `predictions.log`, in-cluster;
- `kubectl port-forward svc/cryptovol-api` and the README's curl return a prediction;
- `helm upgrade --reuse-values --set model.variant=baseline` rolls the API while an in-cluster
  client sends /predict throughout: zero failed requests; then back to `ml`;
- `helm test` passes;
- the running containers are non-root, with a read-only root filesystem and no capabilities;
- the operator-managed Prometheus scrapes every service, has loaded the PrometheusRule, its
  recording rules produce series, and an alert fires when its cause is induced (the
  exchange stopped: ingest disconnected) and clears after.

Numbers go to .state/e2e/report.json; the release stays installed for a look around.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import policies
from kube import (
    BARE_KUBECONFIG,
    CACHE,
    REPO_ROOT,
    Kube,
    StepFailed,
    http_json,
    log,
    pods_ready,
    wait_until,
)

from services import Service, services

RELEASE = "cryptovol"
NAMESPACE = "cryptovol"
MONITORING = "monitoring"
REPORT = REPO_ROOT / ".state" / "e2e" / "report.json"
EXCHANGE = "cryptovol-e2e-exchange"
ALERT = "CryptovolIngestDisconnected"
README_ROWS = {"rows": [{"ret_mean": 0.05, "ret_std": 0.01, "n": 50}]}
WAIT_S = float(os.environ.get("E2E_WAIT_S", "300"))
# the first prediction comes after 30 minutes of replayed context (tests/e2e/exchange.Containerfile)
FIRST_PREDICTION_S = float(os.environ.get("E2E_FIRST_PREDICTION_S", "600"))

# runs in the cluster during the rollout: POST /predict through the Service until told to stop
ROLLOUT_CLIENT = """
import json, os, time, urllib.request
url = "http://{service}:{port}/predict"
body = json.dumps({rows}).encode()
sent = failed = 0
errors = {{}}

def predict():
    request = urllib.request.Request(url, data=body,
                                     headers={{"content-type": "application/json"}})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status == 200 and len(json.load(response)["scores"]) == 1

# a NetworkPolicy enforcer admits a new pod once it has seen it: counting starts at the first
# answer, before the rollout
while True:
    try:
        if predict():
            break
    except OSError:
        pass
    time.sleep(0.5)
print("started", flush=True)
while not os.path.exists("/tmp/stop"):
    sent += 1
    try:
        ok = predict()
    except Exception as exc:
        ok = False
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    failed += not ok
    time.sleep(0.02)
print(json.dumps({{"requests": sent, "failed": failed, "errors": errors}}), flush=True)
"""

# runs in a container: what the kernel says about its PID 1 (the service's process tree)
SECURITY_PROBE = """
import json, os
status = dict(l.split(":\\t", 1) for l in open("/proc/1/status").read().splitlines() if ":\\t" in l)
root = next(l.split() for l in open("/proc/1/mountinfo") if l.split()[4] == "/")
print(json.dumps({"uid": int(status["Uid"].split()[1]), "cap_eff": int(status["CapEff"], 16),
                  "cap_bnd": int(status["CapBnd"], 16), "root_options": root[5],
                  "root_writable": os.access("/", os.W_OK)}))
"""

# runs in a pod: which of the (host, port) pairs can it open a TCP connection to?
CONNECT_PROBE = """
import json, socket
results = []
for host, port in {targets}:
    try:
        socket.create_connection((host, port), timeout=3).close()
        results.append(True)
    except OSError:
        results.append(False)
print(json.dumps(results))
"""

# runs in the consumer pod: the end offsets of predictions.log, from the broker
PREDICTIONS_OFFSETS = """
import os
from kafka import KafkaConsumer, TopicPartition
topic = os.environ.get("TOPIC_PREDICTIONS", "predictions.log")
consumer = KafkaConsumer(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
print(sum(consumer.end_offsets(parts).values()) if parts else 0)
"""


class E2E:
    def __init__(self) -> None:
        self.report: dict[str, Any] = {
            "pods_ready": False, "rows_scored": 0, "predictions_logged": 0,
            "port_forward_predict": False,
            "rollback": {"requests": 0, "failed": None, "variant_after": None,
                         "back_to_ml": False},
            "helm_test": False,
            "security": {"non_root": False, "read_only_root": False, "no_capabilities": False},
            "network_policies": {"allowed": 0, "denied": 0, "checks": [], "enforced": False},
            "prometheus": {"targets_up": 0, "targets_total": 0, "rules_loaded": 0,
                           "recording_series": 0, "alert_fired_and_cleared": False},
            "timings_s": {},
        }
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.services: list[Service] = services()
        self.kube, self.provider = _connect()
        self.report["provider"] = self.provider
        self.report["kubeconfig"] = self.kube.kubeconfig or os.environ.get(
            "KUBECONFIG", "~/.kube/config")

    # ---- steps --------------------------------------------------------------------------
    def step(self, name: str, action: Callable[[], None]) -> bool:
        log(f"---- {name}")
        start = time.monotonic()
        try:
            action()
            self.passed.append(name)
            ok = True
        except (StepFailed, subprocess.SubprocessError, OSError) as exc:
            log(f"FAILED {name}: {exc}")
            self.failed.append(name)
            self.kube.diagnose((NAMESPACE, MONITORING))
            ok = False
        self.report["timings_s"][name] = round(time.monotonic() - start, 1)
        log(f"{'ok' if ok else 'FAILED'} {name} ({self.report['timings_s'][name]} s)")
        return ok

    def images(self) -> None:
        run([str(REPO_ROOT / "tools" / "build-images.sh")], timeout=3600)
        base = os.environ.get("E2E_EXCHANGE_BASE") or self.exchange_base()
        run([*builder(), "build", "--build-arg", f"BASE_IMAGE={base}", "-f",
             str(REPO_ROOT / "tests" / "e2e" / "exchange.Containerfile"),
             "-t", self.exchange_image(), str(REPO_ROOT / "data" / "coinbase-ticker")],
            timeout=600)
        images = [self.local_image(s.image) for s in self.services] + [self.exchange_image()]
        if self.provider == "bare":
            run([str(REPO_ROOT / "k8s" / "bare" / "cluster.sh"), "load", *images], timeout=900)
        elif self.provider.startswith("kind-"):
            for image in images:
                run(["kind", "load", "docker-image", image, "--name",
                     self.provider.removeprefix("kind-")], timeout=600)
        else:
            log(f"context {self.provider}: images must be reachable by its nodes")

    def exchange_base(self) -> str:
        """An image with `cryptovol-fake-exchange`: the developer tooling's own image where
        the tooling is a distribution of libs/, else the ingest image that ships it."""
        ingest = next(s for s in self.services if s.name == "ingest")
        if not (REPO_ROOT / "libs" / "devtools" / "pyproject.toml").is_file():
            return self.local_image(ingest.image)
        image = self.local_image(f"cryptovol-devtools:{ingest.version}")
        python = subprocess.run([str(REPO_ROOT / "tools" / "build-images.sh"), "--base"],
                                capture_output=True, text=True, check=True).stdout.strip()
        run([*builder(), "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={python}",
             "--build-arg", "SERVICE=devtools", "--build-arg", "PACKAGE_DIR=libs/devtools",
             "--build-arg", "COMMAND=cryptovol-fake-exchange", "--target", "service",
             "-t", image, str(REPO_ROOT)], timeout=1800)
        return image

    def local_image(self, image: str) -> str:
        return f"localhost/{image}" if builder()[0] != "docker" else image

    def exchange_image(self) -> str:
        version = next(s for s in self.services if s.name == "ingest").version
        return self.local_image(f"{EXCHANGE}:{version}")

    def install(self) -> None:
        manifest = (REPO_ROOT / "tests" / "e2e" / "exchange.yaml").read_text()
        manifest = manifest.replace("@IMAGE@", self.exchange_image()).replace(
            "@PULL_POLICY@", "Never" if self.provider == "bare" else "IfNotPresent")
        self.kube.apply(manifest)
        self.kube.rollout(f"deployment/{EXCHANGE}")
        values = []
        if self.provider == "bare":
            values += ["-f", str(REPO_ROOT / "k8s" / "bare" / "values.yaml")]
        values += ["-f", str(REPO_ROOT / "tests" / "e2e" / "values.yaml")]
        self.kube.helm("upgrade", "--install", RELEASE, str(REPO_ROOT / "charts" / "cryptovol"),
                       *values, "--wait", "--timeout", f"{int(WAIT_S)}s")

    def ready(self) -> None:
        for svc in self.services:
            self.kube.rollout(f"deployment/{RELEASE}-{svc.name}", int(WAIT_S))
        pods = self.release_pods()
        if not pods_ready(pods):
            raise StepFailed("pods not Ready: " + ", ".join(
                p["metadata"]["name"] for p in pods if not pods_ready([p])))
        self.report["pods_ready"] = True

    def data_flow(self) -> None:
        def counts() -> bool:
            self.report["rows_scored"] = self.rows_scored()
            self.report["predictions_logged"] = self.predictions_logged()
            log(f"rows scored {self.report['rows_scored']}, "
                f"predictions logged {self.report['predictions_logged']}")
            return self.report["rows_scored"] > 0 and self.report["predictions_logged"] > 0
        wait_until("rows scored by the API and predictions on predictions.log", counts,
                   FIRST_PREDICTION_S, 5)

    def port_forward(self) -> None:
        with self.kube.port_forward(f"svc/{RELEASE}-api", 8000) as port:
            health = http_json(f"http://127.0.0.1:{port}/health")
            answer = http_json(f"http://127.0.0.1:{port}/predict", README_ROWS)
        log(f"port-forward 127.0.0.1:{port}: /health {health}; /predict {answer}")
        if not (health.get("model_loaded") and health.get("kafka_connected")):
            raise StepFailed(f"/health through the port-forward: {health}")
        if len(answer.get("scores", [])) != 1:
            raise StepFailed(f"/predict through the port-forward: {answer}")
        self.report["port_forward_predict"] = True

    def monitoring(self) -> None:
        prom = self.report["prometheus"]
        with self.kube.port_forward("svc/prometheus-operated", 9090, MONITORING) as port:
            api = f"http://127.0.0.1:{port}/api/v1"
            expected = len(self.release_pods())

            def targets() -> bool:
                active = http_json(f"{api}/targets?state=active")["data"]["activeTargets"]
                ours = [t for t in active if t["labels"].get("namespace") == NAMESPACE]
                prom["targets_total"] = len(ours)
                prom["targets_up"] = sum(t["health"] == "up" for t in ours)
                total = prom["targets_total"]
                return total >= expected and prom["targets_up"] == total
            wait_until(f"{expected} targets of namespace {NAMESPACE} up", targets, WAIT_S, 5)

            rules_file = REPO_ROOT / "charts" / "cryptovol" / "files" / "rules"
            groups = yaml.safe_load((rules_file / "cryptovol-rules.yaml").read_text())["groups"]
            wanted = [r for g in groups for r in g["rules"]]

            def rules() -> bool:
                groups = http_json(f"{api}/rules")["data"]["groups"]
                prom["rules_loaded"] = sum(len(g["rules"]) for g in groups
                                           if g["name"].startswith("cryptovol."))
                return prom["rules_loaded"] == len(wanted)
            wait_until(f"{len(wanted)} rules of the PrometheusRule loaded", rules, WAIT_S, 5)

            records = [r["record"] for r in wanted if "record" in r]

            def series() -> bool:
                prom["recording_series"] = sum(
                    bool(http_json(f"{api}/query?query={name}")["data"]["result"])
                    for name in records)
                return prom["recording_series"] > 0
            wait_until("a recording rule producing series", series, WAIT_S, 10)

    def induce_alert(self) -> None:
        """Stop the exchange: ingest loses its subscription; the alert's clock starts."""
        self.kube.kubectl("scale", f"deployment/{EXCHANGE}", "--replicas=0")

    def alert_fires_and_clears(self) -> None:
        with self.kube.port_forward("svc/prometheus-operated", 9090, MONITORING) as port:
            api = f"http://127.0.0.1:{port}/api/v1"

            def state() -> str | None:
                for alert in http_json(f"{api}/alerts")["data"]["alerts"]:
                    if alert["labels"].get("alertname") == ALERT and alert["labels"].get(
                            "namespace") == NAMESPACE:
                        return alert["state"]
                return None
            wait_until(f"{ALERT} firing", lambda: state() == "firing", WAIT_S + 120, 5)
            log(f"{ALERT} fired; starting the exchange again")
            self.kube.kubectl("scale", f"deployment/{EXCHANGE}", "--replicas=1")
            wait_until(f"{ALERT} cleared", lambda: state() is None, WAIT_S, 5)
        self.report["prometheus"]["alert_fired_and_cleared"] = True

    def rollback(self) -> None:
        result = self.report["rollback"]
        api = next(s for s in self.services if s.name == "api")
        client = f"{RELEASE}-e2e-rollout-client"
        self.kube.kubectl("delete", "pod", client, "--ignore-not-found", "--wait=true")
        self.kube.apply(yaml.safe_dump(self.client_pod(client, api)))
        wait_until("the rollout client sending", lambda: "started" in self.kube.kubectl(
            "logs", client, check=False), 120)
        for variant in ("baseline", "ml"):
            self.kube.helm("upgrade", RELEASE, str(REPO_ROOT / "charts" / "cryptovol"),
                           "--reuse-values", "--set", f"model.variant={variant}", "--wait",
                           "--timeout", f"{int(WAIT_S)}s")
            self.kube.rollout(f"deployment/{RELEASE}-api", int(WAIT_S))
            with self.kube.port_forward(f"svc/{RELEASE}-api", 8000) as port:
                health = http_json(f"http://127.0.0.1:{port}/health")
                version = http_json(f"http://127.0.0.1:{port}/version")
            log(f"model.variant={variant}: /health {health['model_variant']}, "
                f"/version {version['model_variant']}")
            if variant == "baseline":
                result["variant_after"] = health["model_variant"]
                if health["model_variant"] != "baseline" or version["model_variant"] != "baseline":
                    raise StepFailed(f"after the rollback: /health {health}, /version {version}")
            else:
                result["back_to_ml"] = health["model_variant"] == version["model_variant"] == "ml"
        self.kube.kubectl("exec", client, "--", "python", "-c", "open('/tmp/stop', 'w')")
        wait_until("the rollout client's summary", lambda: self.kube.json(
            "get", "pod", client)["status"]["phase"] == "Succeeded", 60)
        summary = json.loads(self.kube.kubectl("logs", client).strip().splitlines()[-1])
        result["requests"], result["failed"] = summary["requests"], summary["failed"]
        log(f"rollout client: {summary}")
        self.kube.kubectl("delete", "pod", client, "--wait=false")
        if result["failed"] or not result["requests"] or not result["back_to_ml"]:
            raise StepFailed(f"rollback: {result}, errors {summary['errors']}")

    def client_pod(self, name: str, api: Service) -> dict:
        """A pod of the release's `test` component (its NetworkPolicy lets it call the API)."""
        deployment = self.kube.json("get", "deployment", f"{RELEASE}-api")
        template = deployment["spec"]["template"]["spec"]
        script = ROLLOUT_CLIENT.format(service=f"{RELEASE}-api", port=8000, rows=README_ROWS)
        labels = {"app.kubernetes.io/name": "cryptovol", "app.kubernetes.io/instance": RELEASE,
                  "app.kubernetes.io/component": "test"}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": template["securityContext"],
                "containers": [{
                    "name": "client", "image": template["containers"][0]["image"],
                    "imagePullPolicy": template["containers"][0]["imagePullPolicy"],
                    "command": ["python", "-c", script],
                    "securityContext": template["containers"][0]["securityContext"],
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }

    def network_policies(self) -> None:
        """Enforced, not only rendered: per component, each peer of the values' table is
        reached and every other target is not; nor is a component reached from a pod outside
        the release (tests/e2e/policies.py picks the connections)."""
        result = self.report["network_policies"]
        values = json.loads(self.kube.helm("get", "values", RELEASE, "--all", "-o", "json"))
        checks = policies.plan(values, RELEASE, [s.name for s in self.services])
        connected: dict[policies.Check, bool] = {}
        for source in dict.fromkeys(c.source for c in checks):
            mine = [c for c in checks if c.source == source]
            pod = (f"deployment/{EXCHANGE}" if source == policies.STRANGER
                   else f"deployment/{RELEASE}-{source}")
            out = self.kube.kubectl("exec", pod, "--", "python", "-c", CONNECT_PROBE.format(
                targets=[(c.host, c.port) for c in mine]))
            connected.update(zip(mine, json.loads(out.strip().splitlines()[-1]), strict=True))
        result["checks"] = [{"from": c.source, "to": c.target, "address": f"{c.host}:{c.port}",
                             "expected": "allowed" if c.allowed else "denied",
                             "connected": connected[c]} for c in checks]
        result["allowed"] = sum(c.allowed and connected[c] for c in checks)
        result["denied"] = sum(not c.allowed and not connected[c] for c in checks)
        blocked = [r for r in result["checks"] if r["expected"] == "allowed" and not r["connected"]]
        leaked = [r for r in result["checks"] if r["expected"] == "denied" and r["connected"]]
        result["enforced"] = not leaked and result["denied"] > 0
        log(f"network policies: {result['allowed']} allowed and {result['denied']} denied "
            f"connections as the values' table says, of {len(checks)}; enforced "
            f"{result['enforced']}")
        if blocked:
            raise StepFailed(f"connections of the values' table blocked: {blocked}")
        if result["enforced"]:
            return
        if self.enforcer_expected():
            raise StepFailed(f"NetworkPolicies not enforced as the values' table says: {leaked}")
        log("NetworkPolicies accepted but not enforced: the bare cluster was started with "
            "BARE_NETPOL=0 (no kube-router)")

    def enforcer_expected(self) -> bool:
        """kind (kindnet) and minikube (Calico) enforce; the bare cluster with kube-router
        (unless started with BARE_NETPOL=0)."""
        if self.provider != "bare":
            return True
        return bool(self.kube.kubectl("get", "daemonset", "kube-router",
                                      "--ignore-not-found", "-o", "name",
                                      namespace="kube-system").strip())

    def helm_test(self) -> None:
        out = self.kube.helm("test", RELEASE, "--logs", "--timeout", "180s")
        log(out.strip().splitlines()[-1] if out.strip() else "helm test: no output")
        self.report["helm_test"] = True

    def security(self) -> None:
        seen = []
        for pod in self.release_pods():
            for container in pod["spec"]["containers"]:
                out = self.kube.kubectl("exec", pod["metadata"]["name"], "-c", container["name"],
                                        "--", "python", "-c", SECURITY_PROBE)
                seen.append((pod["metadata"]["name"], json.loads(out)))
        security = self.report["security"]
        security["containers_checked"] = len(seen)
        security["non_root"] = all(s["uid"] != 0 for _, s in seen)
        security["read_only_root"] = all(
            "ro" in s["root_options"].split(",") and not s["root_writable"] for _, s in seen)
        security["no_capabilities"] = all(s["cap_eff"] == 0 and s["cap_bnd"] == 0 for _, s in seen)
        bad = [(n, s) for n, s in seen
               if s["uid"] == 0 or s["cap_eff"] or s["cap_bnd"] or s["root_writable"]]
        if bad or not seen:
            raise StepFailed(f"containers not locked down: {bad or 'none checked'}")

    # ---- measurements -------------------------------------------------------------------
    def release_pods(self) -> list[dict]:
        pods = self.kube.pods(
            f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component!=test")
        return [p for p in pods if p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")]

    def rows_scored(self) -> int:
        total = 0
        api_pods = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=api"
        for pod in self.kube.pods(api_pods):
            metrics = self.kube.kubectl("exec", pod["metadata"]["name"], "--", "python", "-c",
                                        "import urllib.request; print(urllib.request.urlopen("
                                        "'http://127.0.0.1:8000/metrics').read().decode())")
            total += int(sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                             if line.startswith("cryptovol_api_rows_scored_total{")))
        return total

    def predictions_logged(self) -> int:
        return int(self.kube.kubectl("exec", f"deployment/{RELEASE}-consumer", "--", "python",
                                     "-c", PREDICTIONS_OFFSETS).strip())

    # ---- the run --------------------------------------------------------------------------
    def run(self) -> int:
        start = time.monotonic()
        ok = (self.step("images", self.images) and self.step("install", self.install)
              and self.step("pods_ready", self.ready))
        if ok:
            self.step("data_flow", self.data_flow)
            self.step("port_forward_predict", self.port_forward)
            # before the exchange is stopped: its pod is the one from outside the release
            self.step("network_policies", self.network_policies)
            monitored = self.step("prometheus", self.monitoring)
            if monitored:
                self.step("induce_alert", self.induce_alert)
            self.step("rollback", self.rollback)
            self.step("helm_test", self.helm_test)
            self.step("security", self.security)
            if monitored:
                self.step("alert_fired_and_cleared", self.alert_fires_and_clears)
        self.report["timings_s"]["total"] = round(time.monotonic() - start, 1)
        self.report["passed"], self.report["failed"] = self.passed, self.failed
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(self.report, indent=2) + "\n")
        log(f"report: {REPORT}")
        print(json.dumps({k: v for k, v in self.report.items() if k != "timings_s"}, indent=2))
        kubeconfig = self.kube.kubeconfig
        print(f"\nThe release stays installed: export KUBECONFIG={kubeconfig}" if kubeconfig
              else "\nThe release stays installed in the current kube context.")
        print(f"{len(self.passed)} passed, {len(self.failed)} failed")
        return 0 if not self.failed and ok else 1


def run(args: list[str], timeout: float) -> None:
    log(" ".join(args))
    proc = subprocess.run(args, timeout=timeout)
    if proc.returncode != 0:
        raise StepFailed(f"{args[0]} exited {proc.returncode}")


def builder() -> list[str]:
    """The image builder tools/build-images.sh picks: docker with an engine, else podman."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True,
                                                 check=False).returncode == 0:
        return ["docker"]
    return [str(REPO_ROOT / "tools" / "podman.sh")]


def _connect() -> tuple[Kube, str]:
    """The bare cluster when it runs, else the current kube context."""
    helm = str(CACHE / "bin" / "helm") if (CACHE / "bin" / "helm").exists() else "helm"
    bare_kubectl = Path(subprocess.run(
        [str(REPO_ROOT / "k8s" / "bare" / "build.sh"), "--bin-dir", "kubernetes"],
        capture_output=True, text=True, check=True).stdout.strip()) / "kubectl"
    if BARE_KUBECONFIG.is_file() and bare_kubectl.is_file():
        kube = Kube(str(BARE_KUBECONFIG), str(bare_kubectl), helm, NAMESPACE)
        if kube.run([kube.kubectl_bin, "get", "--raw", "/readyz"], check=False).returncode == 0:
            log(f"bare cluster: KUBECONFIG={BARE_KUBECONFIG}")
            return kube, "bare"
    kubectl = shutil.which("kubectl") or str(bare_kubectl)
    kube = Kube(None, kubectl, helm, NAMESPACE)
    context = kube.run([kubectl, "config", "current-context"], check=False).stdout.strip()
    if not context:
        raise SystemExit(
            "no cluster: run `make cluster-up K8S_PROVIDER=bare` (or set a kube context)")
    log(f"kube context {context}")
    return kube, context


def main() -> int:
    return E2E().run()


if __name__ == "__main__":
    sys.exit(main())
