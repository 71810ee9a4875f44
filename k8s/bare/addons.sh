#!/usr/bin/env bash
# What `make cluster-up` installs around the chart, on the bare cluster (run by cluster.sh up):
# the namespaces of k8s/namespaces.yaml, the Strimzi and prometheus-operator CRDs (applied
# server-side, so the real apiserver validates the chart's custom resources), CoreDNS,
# NetworkPolicy enforcement (kube-router's policy controller, k8s/bare/netpol.py; BARE_NETPOL=0
# leaves policies unenforced, as the bridge CNI alone does), Kafka
# (k8s/bare/addons/kafka.yaml) and monitoring (k8s/bare/monitoring.py). Waits until
# each is ready; on a timeout prints the pods' events and logs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=k8s/bare/versions.env
source "$here/versions.env"
CACHE="${CRYPTOVOL_CACHE:-$HOME/.cache/cryptovol}"
export KUBECONFIG="$CACHE/bare/kubeconfig"
PY="${PY:-$repo/.venv/bin/python}"
WAIT_S="${WAIT_S:-300}"
K="$("$here/build.sh" --bin-dir kubernetes)/kubectl"
log() { printf '[bare-addons] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ -x "$PY" ] || die "$PY not found: run 'make install' first"

render() { # substitute the @NAME@ placeholders of an add-on manifest
    sed -e "s|@DNS_IP@|${DNS_IP:-10.96.0.10}|g" -e "s|@COREDNS_VERSION@|$COREDNS_VERSION|g" \
        -e "s|@KAFKA_VERSION@|$KAFKA_VERSION|g" "$1"
}

# dump what a namespace's pods say: events, and the logs of containers that are not ready
diagnose() {
    local ns="$1" pod
    log "---- pods in $ns"; "$K" -n "$ns" get pods -o wide >&2 || true
    log "---- events in $ns"; "$K" -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -25 >&2 || true
    for pod in $("$K" -n "$ns" get pods -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}' 2>/dev/null); do
        log "---- logs of $ns/$pod"
        "$K" -n "$ns" logs "$pod" --all-containers --tail=30 >&2 2>&1 || true
    done
}
rollout() { # NAMESPACE KIND/NAME
    local start=$SECONDS
    "$K" -n "$1" rollout status "$2" --timeout="${WAIT_S}s" >/dev/null || { diagnose "$1"; die "$1/$2 not ready"; }
    log "$1/$2 ready after $((SECONDS - start)) s"
}

"$K" apply -f "$repo/k8s/namespaces.yaml" >/dev/null

bash "$repo/tools/install-crds.sh"
"$K" apply --server-side --force-conflicts -f "$CACHE/crds/strimzi-1.2.0" \
    -f "$CACHE/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" >/dev/null
"$K" wait --for=condition=Established --timeout=60s crd --all >/dev/null
log "CRDs established: $("$K" get crd -o name | wc -l)"

module_dir() { # MODULE@VERSION: its source folder in the Go module cache
    (cd "$(mktemp -d)" && go mod download -json "$1" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
}
render "$here/addons/coredns.yaml" | "$K" apply -f - >/dev/null
if [ "${BARE_NETPOL:-1}" != 0 ]; then
    "$PY" "$here/netpol.py" "$(module_dir "github.com/cloudnativelabs/kube-router/v2@$KUBE_ROUTER_VERSION")" \
        "$CACHE/bare/cluster/run/xtables.lock" | "$K" apply -f - >/dev/null
fi
render "$here/addons/kafka.yaml" | "$K" apply -n cryptovol -f - >/dev/null
"$PY" "$here/monitoring.py" \
    "$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")" \
    | "$K" apply -f - >/dev/null

rollout kube-system deployment/coredns
if [ "${BARE_NETPOL:-1}" != 0 ]; then rollout kube-system daemonset/kube-router; fi
rollout cryptovol deployment/kafka
rollout monitoring deployment/prometheus-operator
# the operator creates the StatefulSet of the Prometheus custom resource
for ((i = 0; i < WAIT_S; i += 2)); do
    "$K" -n monitoring get statefulset prometheus-kube-prometheus-stack-prometheus >/dev/null 2>&1 && break
    sleep 2
done
rollout monitoring statefulset/prometheus-kube-prometheus-stack-prometheus
