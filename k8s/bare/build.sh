#!/usr/bin/env bash
# Builds the bare cluster's binaries from their Go modules, once, into a cache outside the
# repository, and reuses them afterwards:
#   k8s/bare/build.sh [COMPONENT...]       (default: every component)
# COMPONENT is one of: kubernetes etcd coredns prometheus-operator prometheus kube-router
#   registry skaffold skaffold-helm
# Output: $CRYPTOVOL_CACHE/bare/bin/<component>-<version>/ (default CRYPTOVOL_CACHE
# ~/.cache/cryptovol). A folder is only published once its build succeeded, so an interrupted
# build is simply redone. Each component's wrapper module (go.mod + go.sum, pinned) lives in
# k8s/bare/modules/<component>/; `k8s/bare/build.sh --resolve COMPONENT` re-resolves it after a
# version bump. The Kubernetes commands are one binary (modules/kubernetes/main.go) linked
# under each command's name. `--download` fetches every component's modules (network only,
# nothing compiled), so CI can overlap the downloads with other work.
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
        kube-router) echo "$KUBE_ROUTER_VERSION" ;;
        registry) echo "$REGISTRY_VERSION" ;;
        skaffold) echo "$SKAFFOLD_VERSION" ;;
        skaffold-helm) echo "$SKAFFOLD_HELM_VERSION" ;;
        *) die "unknown component '$1' (kubernetes etcd coredns prometheus-operator prometheus kube-router registry skaffold skaffold-helm)" ;;
    esac
}

# the Kubernetes commands the one binary answers to
KUBERNETES_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

# the Go packages of each component's commands (".": the wrapper module's own main package)
packages_of() {
    case "$1" in
        kubernetes) echo . ;;
        etcd) echo go.etcd.io/etcd/server/v3 ;;
        coredns) echo github.com/coredns/coredns ;;
        prometheus-operator) printf 'github.com/prometheus-operator/prometheus-operator/cmd/%s\n' \
            operator prometheus-config-reloader ;;
        prometheus) echo github.com/prometheus/prometheus/cmd/prometheus ;;
        kube-router) echo github.com/cloudnativelabs/kube-router/v2/cmd/kube-router ;;
        registry) echo github.com/distribution/distribution/v3/cmd/registry ;;
        skaffold) echo github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold ;;
        skaffold-helm) echo helm.sh/helm/v3/cmd/helm ;;
    esac
}

# the modules `go get` pins in a wrapper (the Kubernetes wrapper imports its commands itself)
modules_of() {
    case "$1" in
        kubernetes) echo "k8s.io/kubernetes@$(module_version_of "$1")" ;;
        *) packages_of "$1" | sed "s/\$/@$(module_version_of "$1")/" ;;
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
        kube-router)
            flags+=" -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$v" ;;
        registry)
            flags+=" -X github.com/distribution/distribution/v3/version.version=$v" ;;
        skaffold)
            flags+=" -X github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=$v" ;;
        skaffold-helm)
            flags+=" -X helm.sh/helm/v3/internal/version.version=$v" ;;
    esac
    echo "$flags"
}

# the folder a component's binaries live in (printed for callers)
bin_dir() { echo "$CACHE/bin/$1-$(version_of "$1")"; }

resolve() { # re-pin a wrapper module: go get its commands, copy go.mod/go.sum back
    local c="$1" work
    work="$(mktemp -d)"
    cp "$here/modules/$c/"* "$work/"
    (cd "$work" && modules_of "$c" | xargs go get && if [ "$c" = kubernetes ]; then go mod tidy; fi)
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
    cp "$here/modules/$c/"* "$work/"
    log "$c $(version_of "$c"): building $(packages_of "$c" | wc -l) command(s) (cold: minutes; see docs/deploy.md)"
    start=$SECONDS
    # shellcheck disable=SC2046
    (cd "$work" && go build -trimpath -tags "$(tags_of "$c")" -ldflags "$(ldflags_of "$c")" -o "$out.partial/" $(packages_of "$c"))
    # a main package at .../server/v3 is named after "server"
    if [ "$c" = etcd ]; then mv "$out.partial/server" "$out.partial/etcd"; fi
    # the wrapper's main package is named after its module: the one Kubernetes binary
    if [ "$c" = kubernetes ]; then
        local cmd
        for cmd in $KUBERNETES_COMMANDS; do ln -s kubernetes "$out.partial/$cmd"; done
    fi
    touch "$out.partial/.complete"
    rm -rf "$out"; mv "$out.partial" "$out"
    log "$c built in $((SECONDS - start)) s: $(cd "$out" && ls | tr '\n' ' ')"
}

download() { # every module a component's build needs, into the module cache; nothing compiled
    local c="$1" work
    [ -f "$here/modules/$c/go.sum" ] || resolve "$c"
    work="$(mktemp -d)"
    cp "$here/modules/$c/"* "$work/"
    (cd "$work" && go mod download)
    rm -rf "$work"
    log "$c $(version_of "$c"): modules downloaded"
}

# what `cluster.sh up` needs
CLUSTER_COMPONENTS="kubernetes etcd coredns prometheus-operator prometheus kube-router"
if [ "${1:-}" = --resolve ]; then shift; for c in "$@"; do resolve "$c"; done; exit 0; fi
if [ "${1:-}" = --bin-dir ]; then bin_dir "$2"; exit 0; fi
if [ "${1:-}" = --download ]; then
    shift; [ $# -gt 0 ] || set -- $CLUSTER_COMPONENTS
    for c in "$@"; do version_of "$c" >/dev/null; done
    for c in "$@"; do [ -f "$(bin_dir "$c")/.complete" ] || download "$c"; done
    exit 0
fi
[ $# -gt 0 ] || set -- $CLUSTER_COMPONENTS
for c in "$@"; do build "$c"; done
