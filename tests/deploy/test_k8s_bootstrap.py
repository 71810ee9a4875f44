"""k8s/: the cluster bootstrap agrees with the chart (namespaces, labels Prometheus and
Grafana select, the Kafka the services connect to), the make targets behave (run for real
against recording stand-ins for kind, minikube, kubectl and helm), and the bare cluster's
pieces work: its PKI, its monitoring manifests, its host relay, its leftover check."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import pytest
import yaml
from deploytools import (
    CHART_DIR,
    K8S_DIR,
    REPO_ROOT,
    by_kind,
    crd_schemas,
    render,
    strict_schema,
)

BARE = K8S_DIR / "bare"
sys.path.insert(0, str(BARE))


def _yaml(path: str) -> dict:
    return yaml.safe_load((K8S_DIR / path).read_text())


# ---- the make targets, run against recording stand-ins ----------------------------------
STUB = r'''#!/usr/bin/env python3
"""Records its argv; keeps just enough state to answer like the real CLI."""
import json, os, sys
name = os.path.basename(sys.argv[0])
state_file = os.environ["STUB_STATE"]
state = {"clusters": [], "secrets": [], "profiles": []}
if os.path.exists(state_file):
    state = json.load(open(state_file))
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([name, *args]) + "\n")
code = 0
if name == "kind" and args[:2] == ["get", "clusters"]:
    print("\n".join(state["clusters"]))
elif name == "kind" and args[:2] == ["create", "cluster"]:
    state["clusters"].append(args[args.index("--name") + 1])
elif name == "kind" and args[:2] == ["delete", "cluster"]:
    state["clusters"].remove(args[args.index("--name") + 1])
elif name == "minikube" and args[0] == "status":
    code = 0 if args[args.index("-p") + 1] in state["profiles"] else 7
elif name == "minikube" and args[0] == "start":
    state["profiles"].append(args[args.index("-p") + 1])
elif name == "kubectl" and args[:2] == ["get", "secret"]:
    code = 0 if args[-1] in state["secrets"] else 1
elif name == "kubectl" and args[:3] == ["create", "secret", "generic"]:
    state["secrets"].append(args[3])
json.dump(state, open(state_file, "w"))
sys.exit(code)
'''


class Stubs:
    def __init__(self, tmp: Path) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name in ("kind", "minikube", "kubectl", "helm"):
            path = self.bin / name
            path.write_text(STUB)
            path.chmod(0o755)
        self.log = tmp / "calls.jsonl"
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}",
                    "STUB_LOG": str(self.log), "STUB_STATE": str(tmp / "state.json")}

    def make(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        self.log.write_text("")
        proc = subprocess.run(
            ["make", "--no-print-directory", "-f", "k8s/Makefile.k8s",
             f"K8S_HELM={self.bin / 'helm'}", f"K8S_KUBECTL={self.bin / 'kubectl'}", *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=self.env)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def calls(self, name: str | None = None) -> list[list[str]]:
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c[1:] for c in calls if name is None or c[0] == name]


@pytest.fixture
def stubs(tmp_path: Path) -> Stubs:
    return Stubs(tmp_path)


def _flag(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


def test_kind_cluster_up_is_pinned_and_idempotent(stubs: Stubs) -> None:
    stubs.make("cluster-up")
    (create,) = [c for c in stubs.calls("kind") if c[:2] == ["create", "cluster"]]
    assert _flag(create, "--name") == "cryptovol"
    assert (REPO_ROOT / _flag(create, "--config")).is_file()
    assert _flag(create, "--image").startswith("kindest/node:v1.37.0@sha256:")
    helm = {_flag(c, "--namespace"): c for c in stubs.calls("helm")}
    strimzi, kps = helm["strimzi"], helm["monitoring"]
    assert strimzi[3].endswith("/strimzi-kafka-operator") and _flag(strimzi, "--version") == "1.2.0"
    assert kps[3].endswith("/kube-prometheus-stack") and _flag(kps, "--version") == "88.5.3"
    for release in (strimzi, kps):
        assert (REPO_ROOT / _flag(release, "-f")).is_file() and "--wait" in release
    kubectl = stubs.calls("kubectl")
    assert ["apply", "-n", "cryptovol", "-f", "k8s/kafka/kafka-cluster.yaml"] in kubectl
    assert any(c[:3] == ["wait", "-n", "cryptovol"] and "kafka/cryptovol" in c for c in kubectl)
    # a second cluster-up reuses the cluster and keeps the Grafana password
    stubs.make("cluster-up")
    assert not [c for c in stubs.calls("kind") if c[:2] == ["create", "cluster"]]
    assert not [c for c in stubs.calls("kubectl") if c[:2] == ["create", "secret"]]
    stubs.make("cluster-down")
    assert stubs.calls("kind") == [["delete", "cluster", "--name", "cryptovol"]]


def test_grafana_password_is_random_and_kept(stubs: Stubs) -> None:
    grafana = _yaml("monitoring/kube-prometheus-stack-values.yaml")["grafana"]
    assert grafana["admin"]["existingSecret"] == "grafana-admin"
    assert "adminPassword" not in grafana
    stubs.make("grafana-secret")
    (create,) = [c for c in stubs.calls("kubectl") if c[:2] == ["create", "secret"]]
    assert create[3] == grafana["admin"]["existingSecret"] and _flag(create, "-n") == "monitoring"
    literals = dict(a.removeprefix("--from-literal=").split("=", 1) for a in create
                    if a.startswith("--from-literal="))
    assert literals[grafana["admin"]["userKey"]] == "admin"
    password = literals[grafana["admin"]["passwordKey"]]
    assert len(password) >= 24 and password.isalnum()
    stubs.make("grafana-secret")
    assert not [c for c in stubs.calls("kubectl") if c[:2] == ["create", "secret"]]


def test_minikube_and_unknown_providers(stubs: Stubs) -> None:
    stubs.make("cluster-up", "K8S_PROVIDER=minikube")
    (start,) = [c for c in stubs.calls("minikube") if c[0] == "start"]
    assert "--kubernetes-version=v1.36.4" in start and "--cni=calico" in start
    proc = stubs.make("cluster-up", "K8S_PROVIDER=docker-desktop", check=False)
    assert proc.returncode != 0 and "must be kind, minikube or bare" in proc.stderr


def test_rollback_serves_the_baseline(stubs: Stubs) -> None:
    stubs.make("rollback")
    (upgrade,) = stubs.calls("helm")
    assert upgrade[:3] == ["upgrade", "cryptovol", "charts/cryptovol"]
    assert "--reuse-values" in upgrade and _flag(upgrade, "--set") == "model.variant=baseline"


# ---- k8s/ agrees with the chart ---------------------------------------------------------
def test_kind_cluster_config() -> None:
    config = _yaml("kind/cluster.yaml")
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]


def test_prometheus_selects_the_charts_monitors_and_rules() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    spec = _yaml("monitoring/kube-prometheus-stack-values.yaml")["prometheus"]["prometheusSpec"]
    release = values["monitoring"]["release"]
    assert spec["serviceMonitorSelector"] == {"matchLabels": {"release": release}}
    assert spec["ruleSelector"] == {"matchLabels": {"release": release}}
    assert spec["serviceMonitorNamespaceSelector"] == {} and spec["ruleNamespaceSelector"] == {}
    objs = render()
    for kind, selector in (("ServiceMonitor", "serviceMonitorSelector"),
                           ("PrometheusRule", "ruleSelector")):
        for obj in by_kind(objs, kind).values():
            labels = obj["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in spec[selector]["matchLabels"].items())


def test_grafana_dashboards_come_from_the_sidecar() -> None:
    grafana = _yaml("monitoring/kube-prometheus-stack-values.yaml")["grafana"]
    sidecar = grafana["sidecar"]["dashboards"]
    assert sidecar["searchNamespace"] == "ALL"
    dashboards = [c for c in by_kind(render(), "ConfigMap").values()
                  if sidecar["label"] in c["metadata"]["labels"]]
    assert dashboards
    for cm in dashboards:
        assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
        assert sidecar["folderAnnotation"] in cm["metadata"]["annotations"]


def test_namespaces_match_the_chart_and_network_policies() -> None:
    names = {
        d["metadata"]["name"] for d in yaml.safe_load_all((K8S_DIR / "namespaces.yaml").read_text())
    }
    assert names == {"cryptovol", "monitoring", "strimzi"}
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["networkPolicy"]["prometheusNamespace"] == "monitoring"
    assert _yaml("strimzi/values.yaml")["watchNamespaces"] == ["cryptovol"]


def test_kafka_manifest_matches_the_chart_and_the_local_broker() -> None:
    from cryptovol.devtools.broker import KAFKA_VERSION

    manifests = {
        d["kind"]: d
        for d in yaml.safe_load_all((K8S_DIR / "kafka" / "kafka-cluster.yaml").read_text())
    }
    kafka, pool = manifests["Kafka"], manifests["KafkaNodePool"]
    assert kafka["spec"]["kafka"]["version"] == KAFKA_VERSION
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    listener = kafka["spec"]["kafka"]["listeners"][0]
    # the services' default bootstrap address is this cluster's plain listener
    objs = render("kafka.cluster.create=true")
    bootstrap = by_kind(objs, "ConfigMap")["cryptovol-api"]["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap == f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    # the chart's optional cluster is the same cluster
    assert by_kind(objs, "Kafka")["cryptovol"]["spec"] == kafka["spec"]
    assert by_kind(objs, "KafkaNodePool")["dual-role"]["spec"] == pool["spec"]
    for topic in by_kind(objs, "KafkaTopic").values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]


# ---- the bare cluster ---------------------------------------------------------------------
def _versions() -> dict[str, str]:
    lines = (BARE / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_bare_kafka_is_the_local_brokers_version_and_the_charts_bootstrap() -> None:
    from cryptovol.devtools.broker import KAFKA_VERSION

    assert _versions()["KAFKA_VERSION"] == KAFKA_VERSION
    text = (BARE / "addons" / "kafka.yaml").read_text().replace("@KAFKA_VERSION@", KAFKA_VERSION)
    docs = {d["kind"]: d for d in yaml.safe_load_all(text)}
    properties = dict(line.split("=", 1) for line in
                      docs["ConfigMap"]["data"]["server.properties"].splitlines() if "=" in line)
    bare = yaml.safe_load((BARE / "values.yaml").read_text())
    advertised = properties["advertised.listeners"].removeprefix("PLAINTEXT://")
    assert advertised == bare["kafka"]["bootstrapServers"]
    # the chart's Kafka peer is this Deployment's pods
    (peer,) = bare["networkPolicy"]["external"]["kafka"]["peers"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_bare_pki_issues_what_each_component_needs(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    subprocess.run(["bash", str(BARE / "pki.sh"), str(pki), "node-x", "10.250.0.1", "10.96.0.1"],
                   check=True, capture_output=True, timeout=120)
    for cert in pki.glob("*.crt"):
        if cert.name != "ca.crt":
            verified = _openssl("verify", "-CAfile", str(pki / "ca.crt"), str(cert))
            assert verified.strip().endswith("OK")
    server = _openssl("x509", "-in", str(pki / "apiserver.crt"), "-noout", "-ext", "subjectAltName")
    for san in ("IP Address:127.0.0.1", "IP Address:10.250.0.1", "IP Address:10.96.0.1",
                "DNS:kubernetes.default.svc.cluster.local"):
        assert san in server
    subjects = {name: _openssl("x509", "-in", str(pki / f"{name}.crt"), "-noout", "-subject",
                               "-nameopt", "compat")
                for name in ("admin", "kubelet-client", "kube-proxy", "apiserver-kubelet-client")}
    assert "O=system:masters" in subjects["admin"]
    assert "O=system:nodes" in subjects["kubelet-client"]
    assert "CN=system:node:node-x" in subjects["kubelet-client"]
    assert "CN=system:kube-proxy" in subjects["kube-proxy"]
    assert "O=system:masters" in subjects["apiserver-kubelet-client"]
    assert oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600"
    kubeconfig = yaml.safe_load((pki / "kubelet.kubeconfig").read_text())
    assert kubeconfig["users"][0]["name"] == "system:node:node-x"


def _operator_module() -> Path:
    out = subprocess.run(
        ["go", "mod", "download", "-json",
         f"github.com/prometheus-operator/prometheus-operator@{_versions()['PROMETHEUS_OPERATOR_VERSION']}"],
        capture_output=True, text=True, check=True, timeout=300, cwd="/tmp")
    return Path(json.loads(out.stdout)["Dir"])


def test_bare_monitoring_is_kube_prometheus_stacks_prometheus() -> None:
    import monitoring

    docs = monitoring.manifests(_operator_module())
    (prometheus,) = [d for d in docs if d["kind"] == "Prometheus"]
    kps = _yaml("monitoring/kube-prometheus-stack-values.yaml")["prometheus"]["prometheusSpec"]
    for key, value in kps.items():
        if not key.endswith("NilUsesHelmValues"):
            assert prometheus["spec"][key] == value, key
    assert prometheus["metadata"]["name"] == "kube-prometheus-stack-prometheus"
    assert prometheus["spec"]["version"] == _versions()["PROMETHEUS_VERSION"]
    # the real apiserver would accept it: strict validation against the operator's CRD
    schema = crd_schemas()[("monitoring.coreos.com/v1", "Prometheus")]
    errors = list(jsonschema.Draft7Validator(strict_schema(schema)).iter_errors(prometheus))
    assert not errors, [e.message for e in errors]
    # the operator's own RBAC, bound in the monitoring namespace, running the local images
    for doc in docs:
        for subject in doc.get("subjects", []):
            assert subject["namespace"] == "monitoring"
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("localhost/cryptovol/prometheus-operator:")
    reloader = "--prometheus-config-reloader=localhost/cryptovol/"
    assert any(a.startswith(reloader) for a in container["args"])
    assert not any("quay.io" in json.dumps(d) for d in docs)


def test_bare_relay_carries_bytes_both_ways() -> None:
    if os.geteuid() != 0:
        pytest.fail("the relay joins a network namespace: run the deploy tests as root",
                    pytrace=False)
    upstream = socket.create_server(("127.0.0.1", 0))
    target = upstream.getsockname()[1]

    def echo() -> None:
        conn, _ = upstream.accept()
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data.upper())
    threading.Thread(target=echo, daemon=True).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        listen = probe.getsockname()[1]
    relay = subprocess.Popen(
        [sys.executable, str(BARE / "relay.py"), "--netns", "/proc/self/ns/net",
         "--listen", f"127.0.0.1:{listen}", "--target", f"127.0.0.1:{target}"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert "relay: 127.0.0.1" in relay.stdout.readline()
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as client:
            client.sendall(b"kubectl")
            client.shutdown(socket.SHUT_WR)
            assert client.recv(1024) == b"KUBECTL"
    finally:
        relay.terminate()
        relay.wait(timeout=10)
        upstream.close()


def test_bare_leftover_check_names_what_down_left() -> None:
    import hoststate

    before = {"mounts": ["/ /"], "netns": [], "run_netns": None, "iptables": ["*filter"],
              "ip6tables": [], "nftables": [], "cgroups": ["/sys/fs/cgroup/memory/x"],
              "paths": {"/run/containerd": False}, "process_netns": ["net:[1]"]}
    assert hoststate.leftovers(before, before, "/nonexistent/state") == []
    after = {**before, "mounts": ["/ /", "/var/lib/kubelet /var/lib/kubelet"],
             "netns": ["cni-1"], "run_netns": ["cni-1"],
             "iptables": ["*filter", "-A KUBE-SERVICES -j ACCEPT"],
             "cgroups": [*before["cgroups"], "/sys/fs/cgroup/memory/cryptovol-bare"],
             "paths": {"/run/containerd": True}, "process_netns": ["net:[1]", "net:[2]"]}
    found = hoststate.leftovers(before, after, "/nonexistent/state")
    for expected in ("mounts: /var/lib/kubelet", "netns: cni-1", "/run/netns",
                     "iptables: -A KUBE-SERVICES", "cgroups: /sys/fs/cgroup/memory/cryptovol-bare",
                     "path left: /run/containerd", "network namespace net:[2]"):
        assert any(item.startswith(expected) for item in found), (expected, found)
    # counters are not changes
    assert hoststate._rules(":INPUT ACCEPT [12:345]") == hoststate._rules(":INPUT ACCEPT [0:0]")


def test_bare_network_policy_enforcement_is_kube_routers_own_firewall_daemonset() -> None:
    import netpol

    version = _versions()["KUBE_ROUTER_VERSION"]
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/cloudnativelabs/kube-router/v2@{version}"],
        capture_output=True, text=True, check=True, timeout=300, cwd="/tmp")
    docs = netpol.manifests(Path(json.loads(out.stdout)["Dir"]), version, "/state/run/xtables.lock")
    assert sorted(d["kind"] for d in docs) == [
        "ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert "namespace" not in role["metadata"]
    # what the policy controller watches
    watched = {r for rule in role["rules"] for r in rule.get("resources", [])}
    assert {"pods", "namespaces", "networkpolicies", "nodes"} <= watched
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["serviceAccountName"] == "kube-router"
    # the node's bridge CNI stays: no CNI install, no CNI config mounted
    assert "initContainers" not in spec
    (container,) = spec["containers"]
    assert container["image"] == f"localhost/cryptovol/kube-router:{version}"
    assert container["imagePullPolicy"] == "Never"
    args = container["args"]
    # the firewall only, with the cluster's Service range, through the service account
    assert {"--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            "--service-cluster-ip-range=10.96.0.0/16"} <= set(args)
    assert not any(a.startswith("--kubeconfig") for a in args)
    assert f"\nSERVICE_CIDR={netpol.SERVICE_CIDR}\n" in (BARE / "cluster.sh").read_text()
    assert [v["hostPath"]["path"] for v in spec["volumes"]] == ["/state/run/xtables.lock"]
    assert [m["name"] for m in container["volumeMounts"]] == ["xtables-lock"]
