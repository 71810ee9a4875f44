#!/usr/bin/env bash
# Builds the bare cluster's binaries from their Go modules, once, into a cache outside the
# repository, and reuses them afterwards:
#   k8s/bare/build.sh [COMPONENT...]       (default: every component)
# COMPONENT is one of: kubernetes etcd coredns prometheus-operator prometheus skaffold
#   kube-network-policies
# Output: $CRYPTOVOL_CACHE/bare/bin/<component>-<version>/ (default CRYPTOVOL_CACHE
# ~/.cache/cryptovol). A folder is only published once its build succeeded, so an interrupted
# build is simply redone. Each component's wrapper module (go.mod + go.sum, pinned) lives in
# k8s/bare/modules/<component>/; `k8s/bare/build.sh --resolve COMPONENT` re-resolves it after a
# version bump.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=k8s/bare/versions.env
source "$here/versions.env"
CACHE="${CRYPTOVOL_CACHE:-$HOME/.cache/cryptovol}/bare"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { printf '[bare-build] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v go >/dev/null || die "go is required (the binaries are built from the Go module proxy)"

version_of() {
    case "$1" in
        kubernetes) echo "$KUBERNETES_VERSION" ;;
        etcd) echo "$ETCD_VERSION" ;;
        coredns) echo "$COREDNS_VERSION" ;;
        prometheus-operator) echo "$PROMETHEUS_OPERATOR_VERSION" ;;
        prometheus) echo "$PROMETHEUS_VERSION" ;;
        skaffold) echo "$SKAFFOLD_VERSION" ;;
        kube-network-policies) echo "$KUBE_NETWORK_POLICIES_VERSION" ;;
        *) die "unknown component '$1' (kubernetes etcd coredns prometheus-operator prometheus skaffold kube-network-policies)" ;;
    esac
}

# the Go packages of each component's commands
packages_of() {
    case "$1" in
        kubernetes) printf 'k8s.io/kubernetes/cmd/%s\n' kube-apiserver kube-controller-manager \
            kube-scheduler kubelet kube-proxy kubectl ;;
        etcd) echo go.etcd.io/etcd/server/v3 ;;
        coredns) echo github.com/coredns/coredns ;;
        prometheus-operator) printf 'github.com/prometheus-operator/prometheus-operator/cmd/%s\n' \
            operator prometheus-config-reloader ;;
        prometheus) echo github.com/prometheus/prometheus/cmd/prometheus ;;
        skaffold) echo github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold ;;
        kube-network-policies) echo sigs.k8s.io/kube-network-policies/cmd ;;
    esac
}

# the Go module version of a component where it differs from its release (Prometheus 3.x
# publishes its module as v0.3xx.y)
module_version_of() {
    case "$1" in
        prometheus) local v="${PROMETHEUS_VERSION#v3.}"; echo "v0.3${v%%.*}.${v#*.}" ;;
        *) version_of "$1" ;;
    esac
}

# build tags: Prometheus with only the Kubernetes service discovery the operator generates
tags_of() {
    case "$1" in
        prometheus) echo remove_all_sd,enable_kubernetes_sd ;;
    esac
}

# version stamps: without them the Kubernetes binaries report v0.0.0-master, and the chart's
# kubeVersion constraint refuses the cluster
ldflags_of() {
    local v minor flags="-s -w" p
    v="$(version_of "$1")"
    case "$1" in
        kubernetes)
            minor="${v#v1.}"; minor="${minor%%.*}"
            for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
                flags+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
                flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
            done ;;
        prometheus-operator|prometheus)
            flags+=" -X github.com/prometheus/common/version.Version=${v#v}" ;;
        skaffold)
            flags+=" -X github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=$v" ;;
    esac
    echo "$flags"
}

# the folder a component's binaries live in (printed for callers)
bin_dir() { echo "$CACHE/bin/$1-$(version_of "$1")"; }

resolve() { # re-pin a wrapper module: go get its commands, copy go.mod/go.sum back
    local c="$1" work
    work="$(mktemp -d)"
    cp "$here/modules/$c/go.mod" "$work/"
    (cd "$work" && packages_of "$c" | sed "s/\$/@$(module_version_of "$c")/" | xargs go get)
    cp "$work/go.mod" "$work/go.sum" "$here/modules/$c/"
    rm -rf "$work"
    log "$c: modules/$c/go.mod and go.sum pinned"
}

build() {
    local c="$1" out work start
    out="$(bin_dir "$c")"
    if [ -f "$out/.complete" ]; then log "$c $(version_of "$c") cached in $out"; return; fi
    [ -f "$here/modules/$c/go.sum" ] || resolve "$c"
    work="$CACHE/src/$c"
    rm -rf "$work" "$out.partial"; mkdir -p "$work" "$out.partial"
    cp "$here/modules/$c/go.mod" "$here/modules/$c/go.sum" "$work/"
    log "$c $(version_of "$c"): building $(packages_of "$c" | wc -l) command(s) (cold: minutes; see docs/deploy.md)"
    start=$SECONDS
    # shellcheck disable=SC2046
    (cd "$work" && go build -trimpath -tags "$(tags_of "$c")" -ldflags "$(ldflags_of "$c")" -o "$out.partial/" $(packages_of "$c"))
    # a main package at .../server/v3 is named after "server"
    if [ "$c" = etcd ]; then mv "$out.partial/server" "$out.partial/etcd"; fi
    # ... and one at .../cmd after "cmd": the project calls it netpol
    if [ "$c" = kube-network-policies ]; then mv "$out.partial/cmd" "$out.partial/netpol"; fi
    touch "$out.partial/.complete"
    rm -rf "$out"; mv "$out.partial" "$out"
    log "$c built in $((SECONDS - start)) s: $(cd "$out" && ls | tr '\n' ' ')"
}

if [ "${1:-}" = --resolve ]; then shift; for c in "$@"; do resolve "$c"; done; exit 0; fi
if [ "${1:-}" = --bin-dir ]; then bin_dir "$2"; exit 0; fi
[ $# -gt 0 ] || set -- kubernetes etcd coredns prometheus-operator prometheus
for c in "$@"; do build "$c"; done
