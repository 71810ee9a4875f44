#!/usr/bin/env bash
# podman as this project runs it: `tools/podman.sh ARGS...` is `podman ARGS...` with
#   - the project's containers.conf (runc, rlimits a small VM allows: tools/podman/),
#   - image storage in $CRYPTOVOL_CACHE/podman (default ~/.cache/cryptovol), kept between
#     runs, so /var/lib/containers is never touched,
#   - a private mount namespace with a fresh tmpfs run root, so no overlay mount, lock or
#     runtime file outlives the command.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${CRYPTOVOL_CACHE:-$HOME/.cache/cryptovol}/podman"
command -v podman >/dev/null || {
    echo "podman not found: run 'make cluster-packages' (or apt-get install podman buildah runc)" >&2
    exit 1
}
mkdir -p "$cache/storage" "$cache/run" "$cache/tmp"
cat > "$cache/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "$cache/run"
graphroot = "$cache/storage"
CONF
export CONTAINERS_CONF="$here/podman/containers.conf" CONTAINERS_STORAGE_CONF="$cache/storage.conf"
export TMPDIR="$cache/tmp"
exec unshare --mount --propagation private sh -c \
    'mount -t tmpfs -o mode=0700 cryptovol-podman "$0" && exec podman --tmpdir "$0/libpod" "$@"' \
    "$cache/run" "$@"
