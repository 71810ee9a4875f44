"""NetworkPolicy enforcement for the bare cluster: kube-network-policies (sigs.k8s.io), whose
bridge CNI only accepts policies.

    python netpol.py KUBE_NETWORK_POLICIES_MODULE_DIR > netpol.yaml

The project's own install.yaml from its Go module (RBAC and the DaemonSet, host network,
nftables + NFQUEUE in the node's network namespace), running the locally built image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def manifests(module_dir: Path, version: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all((module_dir / "install.yaml").read_text()) if d]
    for doc in docs:
        if doc["kind"] != "DaemonSet":
            continue
        spec = doc["spec"]["template"]["spec"]
        container = spec["containers"][0]
        # the local image's entrypoint is the binary: the upstream args start with its path
        if container["args"][0] == "/bin/netpol":
            container["args"] = container["args"][1:]
        # containerd 1.6 has no NRI: pod IPs come from the apiserver, and no host folder
        # /var/run/nri is needed
        container["args"].append("--disable-nri")
        container["volumeMounts"] = [m for m in container["volumeMounts"]
                                     if m["name"] != "nri-plugin"]
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "nri-plugin"]
        # its own image runs as root; the local one-binary images default to nobody
        container["securityContext"]["runAsUser"] = 0
        container["image"] = f"localhost/cryptovol/kube-network-policies:{version}"
        container["imagePullPolicy"] = "Never"
    return docs


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not Path(argv[1], "install.yaml").is_file():
        print(f"usage: {argv[0]} KUBE_NETWORK_POLICIES_MODULE_DIR", file=sys.stderr)
        return 2
    versions = dict(line.split("=", 1) for line in (HERE / "versions.env").read_text().splitlines()
                    if "=" in line and not line.startswith("#"))
    docs = manifests(Path(argv[1]), versions["KUBE_NETWORK_POLICIES_VERSION"])
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
