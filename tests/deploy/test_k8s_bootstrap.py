"""k8s/: the cluster bootstrap agrees with the chart (namespaces, labels Prometheus
and Grafana select, the Kafka cluster the services connect to) and the make
targets run the pinned installs."""

from __future__ import annotations

import subprocess

import yaml
from deploytools import CHART_DIR, K8S_DIR, REPO_ROOT, by_kind, render


def _yaml(path: str) -> dict:
    return yaml.safe_load((K8S_DIR / path).read_text())


def _make_dry_run(*args: str) -> str:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "-f", "k8s/Makefile.k8s", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout


def test_kind_cluster_config() -> None:
    config = _yaml("kind/cluster.yaml")
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]


def test_cluster_up_installs_pinned_operators_and_kafka() -> None:
    out = _make_dry_run("cluster-up")
    assert "kind create cluster --name cryptovol --config k8s/kind/cluster.yaml" in out
    assert "--image kindest/node:v1.37.0@sha256:" in out
    assert "oci://quay.io/strimzi-helm/strimzi-kafka-operator --version 1.2.0" in out
    assert "kube-prometheus-stack --version 88.5.3" in out
    assert "-f k8s/monitoring/kube-prometheus-stack-values.yaml" in out
    assert "apply -f k8s/namespaces.yaml" in out
    assert "create secret generic grafana-admin -n monitoring" in out
    assert "apply -n cryptovol -f k8s/kafka/kafka-cluster.yaml" in out
    assert "wait -n cryptovol kafka/cryptovol --for=condition=Ready" in out
    minikube = _make_dry_run("cluster-up", "K8S_PROVIDER=minikube")
    assert "minikube start -p cryptovol --kubernetes-version=v1.36.4" in minikube
    assert "kind delete cluster --name cryptovol" in _make_dry_run("cluster-down")
    assert "--set model.variant=baseline" in _make_dry_run("rollback")


def test_prometheus_selects_the_charts_monitors_and_rules() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    spec = _yaml("monitoring/kube-prometheus-stack-values.yaml")["prometheus"]["prometheusSpec"]
    release = values["monitoring"]["release"]
    assert spec["serviceMonitorSelector"] == {"matchLabels": {"release": release}}
    assert spec["ruleSelector"] == {"matchLabels": {"release": release}}
    assert spec["serviceMonitorNamespaceSelector"] == {} and spec["ruleNamespaceSelector"] == {}
    objs = render()
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for obj in by_kind(objs, kind).values():
            labels = obj["metadata"]["labels"]
            assert all(
                labels.get(k) == v
                for k, v in spec[
                    "serviceMonitorSelector" if kind == "ServiceMonitor" else "ruleSelector"
                ]["matchLabels"].items()
            )


def test_grafana_password_from_secret_and_dashboards_from_sidecar() -> None:
    grafana = _yaml("monitoring/kube-prometheus-stack-values.yaml")["grafana"]
    assert grafana["admin"]["existingSecret"] == "grafana-admin"
    assert "adminPassword" not in grafana
    out = _make_dry_run("grafana-secret")
    assert f"--from-literal={grafana['admin']['userKey']}=admin" in out
    assert f"--from-literal={grafana['admin']['passwordKey']}=" in out
    sidecar = grafana["sidecar"]["dashboards"]
    assert sidecar["searchNamespace"] == "ALL"
    dashboards = [
        c
        for c in by_kind(render(), "ConfigMap").values()
        if sidecar["label"] in c["metadata"]["labels"]
    ]
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
