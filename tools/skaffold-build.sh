#!/usr/bin/env bash
# skaffold's custom builder for the bare cluster (profile `bare` of skaffold.yaml): builds
# $IMAGE (set by skaffold: repository:tag) from ./Dockerfile with podman. skaffold pushes on
# the bare cluster (tools/skaffold.sh points its default repo at the registry of
# `k8s/bare/cluster.sh registry`): with PUSH_IMAGE=true the image goes there, and skaffold
# deploys it by digest; otherwise it is loaded into the node's containerd. The service is the
# repository's last path element without "cryptovol-".
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
: "${IMAGE:?skaffold sets IMAGE}"
repository="${IMAGE%:*}"
service="${repository##*/}"
service="${service#cryptovol-}"
read -r _ version _ target < <("$repo/.venv/bin/python" "$repo/tools/services.py" | awk -v s="$service" '$1 == s')
[ -n "${target:-}" ] || { echo "skaffold-build: $service is not a service of the chart" >&2; exit 1; }
# a name without a registry host is podman's localhost/ name
case "${repository%%/*}" in
    *.*|*:*|localhost) ref="$IMAGE" ;;
    *) ref="localhost/$IMAGE" ;;
esac
base="$(bash "$repo/tools/build-images.sh" --base)"
"$repo/tools/podman.sh" build --network host --build-arg "PYTHON_IMAGE=$base" \
    --build-arg "SERVICE=$service" --build-arg "VERSION=$version" --target "$target" \
    -t "$ref" "$repo"
if [ "${PUSH_IMAGE:-false}" = true ]; then
    # the registry is the cluster's own, on the host's loopback: plain HTTP
    "$repo/tools/podman.sh" push --tls-verify=false "$ref"
else
    "$repo/k8s/bare/cluster.sh" load "$ref"
fi
