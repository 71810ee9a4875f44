#!/usr/bin/env bash
# The bare cluster's own images, built locally (no registry is reachable) and saved as OCI
# archives that node.sh imports into containerd at start:
#   k8s/bare/images.sh           build what is missing, print the archives' paths
# pause, CoreDNS, prometheus-operator, prometheus-config-reloader and Prometheus are single
# static binaries (k8s/bare/build.sh) in an otherwise empty image; Kafka is Debian's Java 17
# plus the broker jars the project fetches from Maven Central; kube-router is its binary with
# Debian's iptables and ipset. Archives are cached per version in $CRYPTOVOL_CACHE/bare/images/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=k8s/bare/versions.env
source "$here/versions.env"
CACHE="${CRYPTOVOL_CACHE:-$HOME/.cache/cryptovol}"
OUT="$CACHE/bare/images"
mkdir -p "$OUT"
podman() { "$repo/tools/podman.sh" "$@"; }
log() { printf '[bare-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# static NAME:TAG BINARY_PATH: an image of one binary at /bin/<name>, run as nobody
static() {
    local ref="$1" binary="$2" archive dir
    archive="$OUT/$(echo "$ref" | tr '/:' '__').tar"
    [ -s "$archive" ] && { echo "$archive"; return; }
    [ -x "$binary" ] || die "$binary missing (k8s/bare/build.sh builds it)"
    dir="$(mktemp -d)"; mkdir -p "$dir/bin"; cp "$binary" "$dir/bin/"
    tar -C "$dir" -c bin | podman import --change "ENTRYPOINT [\"/bin/$(basename "$binary")\"]" \
        --change 'USER 65534:65534' - "$ref" >/dev/null 2>&1
    rm -rf "$dir"
    podman save -q --format oci-archive -o "$archive.partial" "$ref"
    mv "$archive.partial" "$archive"
    log "built $ref"
    echo "$archive"
}

pause_binary() {
    local bin="$CACHE/bare/bin/pause-$PAUSE_VERSION/pause"
    if [ ! -x "$bin" ]; then
        command -v gcc >/dev/null || die "gcc is needed to build the pause binary"
        mkdir -p "$(dirname "$bin")"
        gcc -Os -static -o "$bin" "$here/images/pause.c" || die "cannot link pause statically (libc6-dev)"
        strip "$bin"
    fi
    echo "$bin"
}

# on_debian NAME:TAG CONTAINERFILE CONTEXT: an image on the debootstrapped Debian bookworm
on_debian() {
    local ref="$1" containerfile="$2" context="$3" archive name
    archive="$OUT/$(echo "$ref" | tr '/:' '__').tar"
    [ -s "$archive" ] && { echo "$archive"; return; }
    name="$(basename "$containerfile" .Containerfile)"
    "$repo/tools/build-images.sh" --base >/dev/null 2>&1 || die "cannot build the Debian base image"
    podman build --network host -f "$containerfile" -t "$ref" "$context" \
        > "$OUT/$name-build.log" 2>&1 || die "$name image build failed: $OUT/$name-build.log"
    podman save -q --format oci-archive -o "$archive.partial" "$ref"
    mv "$archive.partial" "$archive"
    log "built $ref"
    echo "$archive"
}

kafka() {
    local home="$CACHE/kafka-$KAFKA_VERSION"
    [ -d "$home/libs" ] || die "Kafka $KAFKA_VERSION jars missing in $home: run 'make install' (cryptovol-broker fetch)"
    on_debian "localhost/cryptovol/kafka:$KAFKA_VERSION" "$here/images/kafka.Containerfile" "$home"
}

kube_router() {
    local binary context archive
    binary="$(bin kube-router)/kube-router"
    [ -x "$binary" ] || die "$binary missing (k8s/bare/build.sh builds it)"
    context="$(mktemp -d)"; cp "$binary" "$context/"
    archive="$(on_debian "localhost/cryptovol/kube-router:$KUBE_ROUTER_VERSION" \
        "$here/images/kube-router.Containerfile" "$context")" || { rm -rf "$context"; exit 1; }
    rm -rf "$context"
    echo "$archive"
}

bin() { "$here/build.sh" --bin-dir "$1"; }
static "localhost/cryptovol/pause:$PAUSE_VERSION" "$(pause_binary)"
static "localhost/cryptovol/coredns:$COREDNS_VERSION" "$(bin coredns)/coredns"
static "localhost/cryptovol/prometheus-operator:$PROMETHEUS_OPERATOR_VERSION" "$(bin prometheus-operator)/operator"
static "localhost/cryptovol/prometheus-config-reloader:$PROMETHEUS_OPERATOR_VERSION" "$(bin prometheus-operator)/prometheus-config-reloader"
static "localhost/cryptovol/prometheus:$PROMETHEUS_VERSION" "$(bin prometheus)/prometheus"
kafka
if [ "${BARE_NETPOL:-1}" != 0 ]; then kube_router; fi
