#!/usr/bin/env bash
# Installs Debian packages that are not installed yet, without starting their services:
#   tools/apt-install.sh PACKAGE...
# Idempotent: when every package is present it changes nothing and needs no network. A
# package whose service the install would start (containerd, prometheus) is kept stopped by a
# temporary policy-rc.d, removed afterwards; the project starts its own instances.
set -euo pipefail
log() { printf '[apt-install] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root for: $*"; return 1; fi
}

missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "already installed: $*"
    exit 0
fi
command -v apt-get >/dev/null || { log "apt-get not found: install ${missing[*]} by hand"; exit 1; }

log "installing ${missing[*]}"
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    created_policy=1
fi
trap '[ -z "$created_policy" ] || as_root rm -f "$policy"' EXIT
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed ${missing[*]}"
