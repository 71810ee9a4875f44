#!/usr/bin/env bash
# skaffold on the bare cluster (make cluster-up K8S_PROVIDER=bare):
#   tools/skaffold.sh dev [ARGS...]       the inner loop: edit, rebuild, push, roll
#   tools/skaffold.sh run [ARGS...]       build and deploy once
#   tools/skaffold.sh delete              uninstall the release
# Builds skaffold and the Helm 3 it drives once (k8s/bare/build.sh, cached), starts the
# cluster's registry (k8s/bare/cluster.sh registry) and runs skaffold with the bare
# kubeconfig, whose context activates the `bare` profile, that registry as the default repo
# (skaffold pushes there and deploys by digest; the node pulls from it), and Helm 3 first on
# PATH (skaffold v2.16 cannot drive Helm 4).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${CRYPTOVOL_CACHE:-$HOME/.cache/cryptovol}"
bin_dir() { "$repo/k8s/bare/build.sh" --bin-dir "$1"; }

"$repo/k8s/bare/build.sh" skaffold skaffold-helm >&2
registry="$("$repo/k8s/bare/cluster.sh" registry)"
export KUBECONFIG="$CACHE/bare/kubeconfig"
export PATH="$(bin_dir skaffold-helm):$(bin_dir skaffold):$(bin_dir kubernetes):$PATH"
export SKAFFOLD_DEFAULT_REPO="$registry" SKAFFOLD_INSECURE_REGISTRY="$registry"
# nothing to ask the internet about
export SKAFFOLD_UPDATE_CHECK=false SKAFFOLD_INTERACTIVE=false
cd "$repo"
exec skaffold "$@"
