"""Monitoring for the bare cluster, the way kube-prometheus-stack installs it, minus Grafana:

    python monitoring.py OPERATOR_MODULE_DIR > monitoring.yaml

- the real prometheus-operator: its own RBAC, ServiceAccount, Deployment and Service from
  its Go module (example/rbac/prometheus-operator/), moved to the `monitoring` namespace and
  pointed at the locally built images;
- Prometheus's RBAC from the same module (example/rbac/prometheus/);
- a Prometheus custom resource whose spec is kube-prometheus-stack's `prometheusSpec` from
  k8s/monitoring/kube-prometheus-stack-values.yaml (so it selects ServiceMonitors and
  PrometheusRules by `release: kube-prometheus-stack` exactly as the kind/minikube path does),
  named as kube-prometheus-stack names it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KPS_VALUES = HERE.parent / "monitoring" / "kube-prometheus-stack-values.yaml"
NAMESPACE = "monitoring"
RELEASE = "kube-prometheus-stack"
# helm-only switches of the kube-prometheus-stack chart: not fields of the Prometheus CRD
HELM_ONLY = {"serviceMonitorSelectorNilUsesHelmValues", "ruleSelectorNilUsesHelmValues",
             "podMonitorSelectorNilUsesHelmValues", "probeSelectorNilUsesHelmValues",
             "scrapeConfigSelectorNilUsesHelmValues"}


def _versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (HERE / "versions.env").read_text().splitlines()
             if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _upstream(folder: Path, images: dict[str, str]) -> list[dict]:
    """The module's manifests of one folder, in NAMESPACE, with local images."""
    text = "\n---\n".join(p.read_text() for p in sorted(folder.glob("*.yaml"))
                          if not p.name.endswith("service-monitor.yaml"))
    for upstream, local in images.items():
        text = text.replace(upstream, local)
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] in {"Deployment", "Service", "ServiceAccount"}:
            doc["metadata"]["namespace"] = NAMESPACE
        for subject in doc.get("subjects", []):
            subject["namespace"] = NAMESPACE
    return docs


def prometheus(versions: dict[str, str]) -> dict:
    spec = yaml.safe_load(KPS_VALUES.read_text())["prometheus"]["prometheusSpec"]
    spec = {k: v for k, v in spec.items() if k not in HELM_ONLY}
    version = versions["PROMETHEUS_VERSION"]
    spec |= {
        "image": f"localhost/cryptovol/prometheus:{version}",
        "version": version,
        "replicas": 1,
        "serviceAccountName": "prometheus",
        # kube-prometheus-stack's defaults for its Prometheus pod
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 2000,
                            "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": f"{RELEASE}-prometheus", "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/part-of": "cryptovol-bare",
                                "release": RELEASE}},
        "spec": spec,
    }


def manifests(module_dir: Path) -> list[dict]:
    versions = _versions()
    operator = versions["PROMETHEUS_OPERATOR_VERSION"]
    images = {
        f"quay.io/prometheus-operator/prometheus-operator:{operator}":
            f"localhost/cryptovol/prometheus-operator:{operator}",
        f"quay.io/prometheus-operator/prometheus-config-reloader:{operator}":
            f"localhost/cryptovol/prometheus-config-reloader:{operator}",
    }
    docs = _upstream(module_dir / "example" / "rbac" / "prometheus-operator", images)
    for doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["imagePullPolicy"] = "Never"
    docs += [d for d in _upstream(module_dir / "example" / "rbac" / "prometheus", images)
             if d["kind"] != "Prometheus"]
    return [*docs, prometheus(versions)]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not Path(argv[1], "example", "rbac").is_dir():
        print(f"usage: {argv[0]} PROMETHEUS_OPERATOR_MODULE_DIR", file=sys.stderr)
        return 2
    yaml.safe_dump_all(manifests(Path(argv[1])), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
