#!/usr/bin/env bash
# Installs the pinned deploy tooling used by `make test` (tests/deploy) into
# ~/.cache/cryptovol/bin (override with CRYPTOVOL_TOOLS_BIN):
#   helm       built from source with the Go toolchain (module proxy)
#   prometheus, promtool   Debian's `prometheus` package (service left stopped)
#   skaffold   optional (SKAFFOLD=1), built from its Go module; otherwise skaffold's
#              JSON schema is taken from its Go module source for validation
#   CRDs       Strimzi and prometheus-operator CustomResourceDefinitions
#              (tools/install-crds.sh, into ~/.cache/cryptovol/crds)
# Idempotent: a tool already at the pinned version is left alone.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.1}"
HELM_FALLBACK_VERSION="${HELM_FALLBACK_VERSION:-v3.22.0}"
SKAFFOLD_VERSION="${SKAFFOLD_VERSION:-v2.16.1}"
SKAFFOLD_SCHEMA="${SKAFFOLD_SCHEMA:-v4beta13}"
BIN="${CRYPTOVOL_TOOLS_BIN:-$HOME/.cache/cryptovol/bin}"
SHARE="$(dirname "$BIN")/share"

log() { printf '[deploy-tools] %s\n' "$*"; }
mkdir -p "$BIN" "$SHARE"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root for: $*"; return 1; fi
}

# --- helm -------------------------------------------------------------------
helm_version() { "$BIN/helm" version --template '{{.Version}}' 2>/dev/null || true; }

install_helm() {
    local version="$1" major
    major="${version%%.*}"
    log "building helm $version (go install helm.sh/helm/$major/cmd/helm@$version)"
    GOBIN="$BIN" GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0 \
        go install -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$version" \
        "helm.sh/helm/$major/cmd/helm@$version"
}

current="$(helm_version)"
# a fallback build is kept (marker file) so that later runs stay fast
if [ "$current" = "$HELM_VERSION" ] || { [ -f "$BIN/.helm-fallback" ] && [ "$current" = "$HELM_FALLBACK_VERSION" ]; }; then
    log "helm $current already installed in $BIN"
else
    command -v go >/dev/null || { log "go is required to build helm"; exit 1; }
    rm -f "$BIN/.helm-fallback"
    if ! install_helm "$HELM_VERSION"; then
        log "helm $HELM_VERSION failed to build, falling back to $HELM_FALLBACK_VERSION"
        install_helm "$HELM_FALLBACK_VERSION"
        touch "$BIN/.helm-fallback"
    fi
    log "helm $(helm_version) installed"
fi

# --- prometheus + promtool (Debian) ----------------------------------------
if [ -x "$BIN/promtool" ] && [ -x "$BIN/prometheus" ]; then
    log "prometheus/promtool already linked in $BIN ($("$BIN/prometheus" --version 2>&1 | head -1))"
else
    # tools/apt-install.sh keeps the package's service from starting on install
    bash "$(dirname "$0")/apt-install.sh" prometheus
    # never leave the Debian service enabled or running: the tests start their own instances
    log "disabling and stopping the Debian prometheus service"
    if command -v systemctl >/dev/null; then
        as_root systemctl disable prometheus >/dev/null 2>&1 || true
        if [ -d /run/systemd/system ]; then as_root systemctl stop prometheus >/dev/null 2>&1 || true; fi
    fi
    if [ -x /etc/init.d/prometheus ]; then
        as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
    ln -sf /usr/bin/prometheus "$BIN/prometheus"
    ln -sf /usr/bin/promtool "$BIN/promtool"
    log "prometheus/promtool linked into $BIN"
fi

# --- skaffold schema (and optionally the binary) ---------------------------
schema_file="$SHARE/skaffold-$SKAFFOLD_SCHEMA.json"
if [ -s "$schema_file" ]; then
    log "skaffold schema $SKAFFOLD_SCHEMA present ($schema_file)"
else
    log "fetching skaffold $SKAFFOLD_VERSION module source for its published JSON schema"
    dir="$(cd "$(mktemp -d)" && go mod download -json "github.com/GoogleContainerTools/skaffold/v2@$SKAFFOLD_VERSION" \
        | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')"
    cp "$dir/docs-v2/content/en/schemas/$SKAFFOLD_SCHEMA.json" "$schema_file" 2>/dev/null \
        || cp "$dir/docs/content/en/schemas/$SKAFFOLD_SCHEMA.json" "$schema_file"
    chmod 644 "$schema_file"
    log "skaffold schema saved to $schema_file"
fi

# The skaffold binary takes about 10 minutes to build cold on 2 cores, so the tests
# validate skaffold.yaml against the schema above; SKAFFOLD=1 builds it (pinned wrapper
# module, cached in ~/.cache/cryptovol/bare/bin) and links it into $BIN.
if [ -n "${SKAFFOLD:-}" ]; then
    bash "$(dirname "$0")/../k8s/bare/build.sh" skaffold
    ln -sf "$(bash "$(dirname "$0")/../k8s/bare/build.sh" --bin-dir skaffold)/skaffold" "$BIN/skaffold"
    log "skaffold $("$BIN/skaffold" version) linked into $BIN"
fi

# --- CRDs the deploy tests validate custom resources against -----------------
bash "$(dirname "$0")/install-crds.sh"

log "done: tools in $BIN"
