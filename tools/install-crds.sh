#!/usr/bin/env bash
# Installs the CustomResourceDefinitions the chart's custom resources are validated against
# (tests/deploy) and that the bare cluster applies, into $CRYPTOVOL_CACHE/crds
# (default ~/.cache/cryptovol/crds), from package registries only:
#   strimzi-<version>/             Kafka, KafkaNodePool, KafkaTopic: generated exactly as
#                                  Strimzi's build does, by its CRD generator (Maven Central,
#                                  io.strimzi:crd-generator) run on its API model (io.strimzi:api)
#   prometheus-operator-<version>/ every monitoring.coreos.com CRD, as shipped in the
#                                  operator's Go module (example/prometheus-operator-crd/)
# Idempotent: a complete folder is left alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
STRIMZI_VERSION="${STRIMZI_VERSION:-1.2.0}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.93.1}"
OUT="${CRYPTOVOL_CACHE:-$HOME/.cache/cryptovol}/crds"
log() { printf '[crds] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
mkdir -p "$OUT"

# a Java runtime of at least MAJOR: the one on PATH, else one under /usr/lib/jvm
java_at_least() {
    local major="$1" candidate version
    for candidate in "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
        [ -x "$candidate" ] || continue
        version="$("$candidate" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
        [ -n "$version" ] && [ "${version%%.*}" -ge "$major" ] && { echo "$candidate"; return 0; }
    done
    return 1
}

strimzi() {
    local dest="$OUT/strimzi-$STRIMZI_VERSION" work java
    [ -f "$dest/.complete" ] && { log "Strimzi $STRIMZI_VERSION CRDs present ($dest)"; return; }
    command -v mvn >/dev/null || die "mvn is required to fetch Strimzi's CRD generator from Maven Central"
    # Strimzi 1.2.0's generator is compiled for Java 21
    java="$(java_at_least 21)" || die "Strimzi's CRD generator needs Java 21 or newer (found none on PATH or in /usr/lib/jvm)"
    work="$(mktemp -d)"
    log "fetching io.strimzi:api and io.strimzi:crd-generator $STRIMZI_VERSION (Maven Central)"
    mvn -q -B -Dstyle.color=never -f "$here/crds/strimzi-pom.xml" -Dstrimzi.version="$STRIMZI_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$work/lib" >&2 \
        || die "could not resolve Strimzi $STRIMZI_VERSION from Maven Central"
    mkdir -p "$work/out"
    # the arguments of Strimzi's own build (api/pom.xml, generate-crds)
    "$java" -cp "$work/lib/*" io.strimzi.crdgenerator.CrdGenerator \
        --label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ \
        --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml \
        "io.strimzi.api.kafka.model.kafka.Kafka=$work/out/040-Crd-kafka.yaml" \
        "io.strimzi.api.kafka.model.topic.KafkaTopic=$work/out/043-Crd-kafkatopic.yaml" \
        "io.strimzi.api.kafka.model.nodepool.KafkaNodePool=$work/out/045-Crd-kafkanodepool.yaml" >&2 \
        || die "Strimzi's CRD generator failed"
    touch "$work/out/.complete"
    rm -rf "$dest"; mv "$work/out" "$dest"; rm -rf "$work"
    log "Strimzi $STRIMZI_VERSION CRDs generated into $dest"
}

prometheus_operator() {
    local dest="$OUT/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" dir
    [ -f "$dest/.complete" ] && { log "prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs present ($dest)"; return; }
    command -v go >/dev/null || die "go is required to fetch the prometheus-operator module"
    dir="$(cd "$(mktemp -d)" && go mod download -json \
        "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')"
    [ -d "$dir/example/prometheus-operator-crd" ] || die "no CRDs in the prometheus-operator module at $dir"
    rm -rf "$dest.partial"; mkdir -p "$dest.partial"
    cp "$dir"/example/prometheus-operator-crd/*.yaml "$dest.partial/"
    chmod 644 "$dest.partial"/*.yaml
    touch "$dest.partial/.complete"
    rm -rf "$dest"; mv "$dest.partial" "$dest"
    log "prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs copied into $dest"
}

strimzi
prometheus_operator
