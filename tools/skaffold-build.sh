#!/usr/bin/env bash
# skaffold's custom builder for the bare cluster (profile `bare` of skaffold.yaml): builds
# $IMAGE (set by skaffold: repository:tag) from ./Dockerfile with podman, then loads it into
# the bare node's containerd. The service is the repository's name without "cryptovol-".
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
: "${IMAGE:?skaffold sets IMAGE}"
repository="${IMAGE%:*}"
service="${repository##*/}"
service="${service#cryptovol-}"
read -r _ version _ target < <("$repo/.venv/bin/python" "$repo/tools/services.py" | awk -v s="$service" '$1 == s')
[ -n "${target:-}" ] || { echo "skaffold-build: $service is not a service of the chart" >&2; exit 1; }
base="$(bash "$repo/tools/build-images.sh" --base)"
"$repo/tools/podman.sh" build --network host --build-arg "PYTHON_IMAGE=$base" \
    --build-arg "SERVICE=$service" --build-arg "VERSION=$version" --target "$target" \
    -t "localhost/${IMAGE#localhost/}" "$repo"
"$repo/k8s/bare/cluster.sh" load "localhost/${IMAGE#localhost/}"
