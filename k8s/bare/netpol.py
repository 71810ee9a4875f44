"""NetworkPolicy enforcement for the bare cluster, whose bridge CNI only accepts policies:
kube-router's network policy controller (iptables + ipset), as kube-router ships it.

    python netpol.py KUBE_ROUTER_MODULE_DIR XTABLES_LOCK > netpol.yaml

From kube-router's own manifests in its Go module: the ServiceAccount, ClusterRole and
binding of `daemonset/generic-kuberouter.yaml` and the firewall-only DaemonSet of
`daemonset/kube-router-firewall-daemonset.yaml` (host network, privileged), running the
locally built image with the cluster's Service range, the in-cluster service account instead
of a kubeconfig on the host, and the xtables lock kube-proxy takes too (XTABLES_LOCK, a file
of the cluster's state): no CNI install, the node's CNI stays.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SERVICE_CIDR = "10.96.0.0/16"  # cluster.sh SERVICE_CIDR
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def daemonset(upstream: dict, version: str, xtables_lock: str) -> dict:
    spec = upstream["spec"]["template"]["spec"]
    spec.pop("initContainers", None)
    spec["serviceAccountName"] = "kube-router"
    container = spec["containers"][0]
    container["image"] = f"localhost/cryptovol/kube-router:{version}"
    container["imagePullPolicy"] = "Never"
    args = [a for a in container["args"] if not a.startswith("--kubeconfig")]
    container["args"] = [*args, f"--service-cluster-ip-range={SERVICE_CIDR}",
                         "--hostname-override=$(NODE_NAME)"]
    container["env"] = [e for e in container["env"] if e["name"] == "NODE_NAME"]
    keep = {"xtables-lock"}
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] in keep]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] in keep]
    for volume in spec["volumes"]:
        volume["hostPath"]["path"] = xtables_lock
    return upstream


def manifests(module_dir: Path, version: str, xtables_lock: str) -> list[dict]:
    generic = _docs(module_dir / "daemonset" / "generic-kuberouter.yaml")
    rbac = [d for d in generic if d["kind"] in RBAC_KINDS]
    for doc in rbac:
        if doc["kind"] == "ClusterRole":
            doc["metadata"].pop("namespace", None)  # cluster-scoped
    firewall = _docs(module_dir / "daemonset" / "kube-router-firewall-daemonset.yaml")
    upstream = next(d for d in firewall if d["kind"] == "DaemonSet")
    return [*rbac, daemonset(upstream, version, xtables_lock)]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not Path(argv[1], "daemonset").is_dir():
        print(f"usage: {argv[0]} KUBE_ROUTER_MODULE_DIR XTABLES_LOCK", file=sys.stderr)
        return 2
    versions = dict(line.split("=", 1) for line in (HERE / "versions.env").read_text().splitlines()
                    if "=" in line and not line.startswith("#"))
    docs = manifests(Path(argv[1]), versions["KUBE_ROUTER_VERSION"], argv[2])
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
