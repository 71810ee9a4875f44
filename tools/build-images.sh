#!/usr/bin/env bash
# Builds the service images from the repository's one Dockerfile:
#   tools/build-images.sh [SERVICE...]      (default: every service of charts/cryptovol/values.yaml)
#   tools/build-images.sh --base            only make sure the Python base image exists, and
#                                           print its name (the choice is logged on stderr)
# Builder: docker when a Docker engine answers, else podman (tools/podman.sh). Each image is
# tagged <repository>:<version> (podman: localhost/<repository>:<version>).
# Base image: the Dockerfile's official PYTHON_IMAGE when it can be pulled; where no
# container registry is reachable, a stand-in of the same Python minor version built from
# Debian bookworm's packages (debootstrap + python3), and the choice is printed.
# PYTHON_IMAGE=... overrides the base.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
CACHE="${CRYPTOVOL_CACHE:-$HOME/.cache/cryptovol}"
PY="${PY:-$repo/.venv/bin/python}"
BOOKWORM_IMAGE=localhost/cryptovol/bookworm:12
STANDIN_IMAGE=localhost/cryptovol/python-standin:3.11-bookworm
mkdir -p "$CACHE/images"
log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -n "${BUILDER:-}" ]; then :
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then BUILDER=docker
elif command -v podman >/dev/null; then BUILDER=podman
else die "no image builder: install docker, or podman ('make cluster-packages')"; fi
builder() { if [ "$BUILDER" = docker ]; then docker "$@"; else "$repo/tools/podman.sh" "$@"; fi; }

official="$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)"
image_exists() { builder image inspect "$1" >/dev/null 2>&1; }

# Debian bookworm (minbase) from the machine's Debian mirror, with the host's extra CA
# certificates (package registries may be reached through a TLS-inspecting proxy)
build_bookworm() {
    command -v debootstrap >/dev/null || die "debootstrap not found ('make cluster-packages')"
    local mirror rootfs
    mirror="$(sed -n 's/^URIs: *\(\S*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    rootfs="$CACHE/images/bookworm-rootfs"
    rm -rf "$rootfs"; mkdir -p "$rootfs"
    log "debootstrap bookworm (minbase) from $mirror"
    unshare --mount --propagation private debootstrap --variant=minbase --include=ca-certificates \
        bookworm "$rootfs" "$mirror" > "$CACHE/images/debootstrap.log" 2>&1 \
        || die "debootstrap failed: see $CACHE/images/debootstrap.log"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
    tar -C "$rootfs" -c . | builder import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
        - "$BOOKWORM_IMAGE" >/dev/null
    rm -rf "$rootfs"
    log "built $BOOKWORM_IMAGE"
}

python_base() {
    if [ -n "${PYTHON_IMAGE:-}" ]; then log "base image: $PYTHON_IMAGE (PYTHON_IMAGE)"; return; fi
    if image_exists "$official" || builder pull -q "$official" >/dev/null 2>&1; then
        PYTHON_IMAGE="$official"
        log "base image: $official (official)"
        return
    fi
    if ! image_exists "$STANDIN_IMAGE"; then
        image_exists "$BOOKWORM_IMAGE" || build_bookworm
        builder build --network host --build-arg "BOOKWORM_IMAGE=$BOOKWORM_IMAGE" \
            -f tools/images/python-standin.Containerfile -t "$STANDIN_IMAGE" tools/images >/dev/null
    fi
    local official_minor standin
    official_minor="$(echo "$official" | sed -n 's/^python:\([0-9]*\.[0-9]*\).*/\1/p')"
    standin="$(builder run --rm --network none "$STANDIN_IMAGE" python3 -c \
        'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
    [ "${standin%.*}" = "$official_minor" ] \
        || die "stand-in Python $standin is not the Dockerfile's Python $official_minor"
    PYTHON_IMAGE="$STANDIN_IMAGE"
    log "base image: $official cannot be pulled here; using the stand-in $STANDIN_IMAGE" \
        "(Debian bookworm's Python $standin, same minor version)"
}

python_base
if [ "${1:-}" = --base ]; then echo "$PYTHON_IMAGE"; exit 0; fi
[ -x "$PY" ] || die "$PY not found: run 'make install' first"

wanted=" $* "
while read -r name version repository target; do
    [ $# -eq 0 ] || [[ "$wanted" == *" $name "* ]] || continue
    log "building $repository:$version (target $target)"
    start=$SECONDS
    builder build --network host --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
        --build-arg "SERVICE=$name" --build-arg "VERSION=$version" --target "$target" \
        -t "$repository:$version" . > "$CACHE/images/build-$name.log" 2>&1 \
        || { tail -30 "$CACHE/images/build-$name.log" >&2; die "$name: build failed (log: $CACHE/images/build-$name.log)"; }
    log "built $repository:$version in $((SECONDS - start)) s"
done < <("$PY" tools/services.py)
