#!/usr/bin/env bash
# A CI run as on a fresh machine, measured: `.ci/run` in a fresh clone of a commit, with HOME
# pointing at an empty folder, so ~/.cache (the project's cache, uv's and pip's), Go's build
# and module caches, Maven's ~/.m2 and podman's image storage all start empty:
#   tools/cold-ci.sh [--keep] [COMMIT]      (default: HEAD)
# It runs the Kubernetes path too (CI_KUBERNETES=1; CI_KUBERNETES= cold-ci.sh: make test only).
# Every output line is timestamped into the run's log; the load average is sampled every 15 s.
# At the end a JSON summary (wall time, exit status, load average during the run) is printed
# and written beside the log. The scratch folder is removed unless --keep; Debian packages and
# the machine's own toolchains (Go, Python, Java) are what a fresh machine has too.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
keep=""
if [ "${1:-}" = --keep ]; then keep=1; shift; fi
commit="$(git -C "$repo" rev-parse "${1:-HEAD}")"
scratch="$(mktemp -d /tmp/cryptovol-cold-XXXXXX)"
out="${COLD_CI_OUT:-$repo/.state/cold-ci}"
mkdir -p "$out" "$scratch/home"
log_file="$out/${commit:0:10}-$(date +%Y%m%dT%H%M%S).log"

git clone -q --no-checkout "$repo" "$scratch/repo"
git -C "$scratch/repo" checkout -q --detach "$commit"

sample_load() {
    while true; do
        printf '%s %s\n' "$(date +%s)" "$(cut -d' ' -f1-3 /proc/loadavg)"
        sleep 15
    done
}
sample_load > "$scratch/load" &
sampler=$!
cleanup() {
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    if [ -z "$keep" ]; then rm -rf "$scratch"; fi
}
trap cleanup EXIT

echo "cold CI of $commit in $scratch (log: $log_file)"
start=$(date +%s)
status=0
# the caches a fresh machine has not got; PYENV_ROOT keeps the machine's Python findable;
# the Kubernetes path included unless CI_KUBERNETES is set empty
(cd "$scratch/repo" && env -u GOCACHE -u GOMODCACHE -u GOPATH -u UV_CACHE_DIR \
    -u PIP_CACHE_DIR -u CRYPTOVOL_CACHE HOME="$scratch/home" CI_KUBERNETES="${CI_KUBERNETES-1}" \
    PYENV_ROOT="${PYENV_ROOT:-/root/.pyenv}" .ci/run) 2>&1 | while IFS= read -r line; do printf '%(%H:%M:%S)T %s\n' -1 "$line"; done \
    > "$log_file" || status=$?
end=$(date +%s)
kill "$sampler" 2>/dev/null || true

python3 - "$scratch/load" "$start" "$end" "$status" "$commit" "$log_file" <<'PY' | tee "${log_file%.log}.json"
import json, sys
path, start, end, status, commit, log = sys.argv[1:]
samples = [line.split() for line in open(path) if line.strip()]
one_minute = [float(s[1]) for s in samples]
print(json.dumps({
    "commit": commit, "exit_status": int(status), "wall_s": int(end) - int(start),
    "load_1m": {"mean": round(sum(one_minute) / max(len(one_minute), 1), 2),
                "min": min(one_minute, default=None), "max": max(one_minute, default=None),
                "samples": len(one_minute)},
    "log": log,
}, indent=2))
PY
exit "$status"
