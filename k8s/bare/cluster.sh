#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, no Docker needed (K8S_PROVIDER=bare):
#   k8s/bare/cluster.sh up          build (once) and start the node, install the add-ons
#   k8s/bare/cluster.sh prepare     only build (once) what up needs: binaries and images
#   k8s/bare/cluster.sh down        stop everything, leave nothing behind
#   k8s/bare/cluster.sh status      what runs, and the kubeconfig to use
#   k8s/bare/cluster.sh load IMAGE...   copy images from podman/docker into the node
#   k8s/bare/cluster.sh registry    start (once) an image registry the node pulls from and
#                                   the host pushes to; prints its address (skaffold's repo)
# NetworkPolicies are enforced by kube-router's policy controller (iptables + ipset in the
# node's network namespace); BARE_NETPOL=0 up leaves them unenforced.
# The node (etcd, control plane, containerd, kubelet, kube-proxy and every pod) runs in
# network, mount and PID namespaces of its own: no uplink and no default route, so nothing
# in it can leave the machine; the host's sysctls, routes and firewall stay untouched. The
# apiserver (and so `kubectl port-forward`) is reached from the host's 127.0.0.1 through a
# relay. State: $CRYPTOVOL_CACHE/bare/cluster (default ~/.cache/cryptovol), removed by down;
# binaries and images stay cached beside it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=k8s/bare/versions.env
source "$here/versions.env"
CACHE="${CRYPTOVOL_CACHE:-$HOME/.cache/cryptovol}"
BARE="$CACHE/bare"
STATE="$BARE/cluster"
KUBECONFIG_OUT="$BARE/kubeconfig"
NODE_NAME=cryptovol-node
NODE_IP=10.250.0.1
NODE_CIDR=10.250.0.0/24
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
CGROUP_ROOT=/cryptovol-bare
# fixed host paths containerd, kubelet and CNI write to: private tmpfs mounts in the node
PRIVATE_DIRS="/run/containerd /run/netns /var/lib/kubelet /var/lib/cni"
WAIT_NODE_S="${WAIT_NODE_S:-120}"

log() { printf '[bare] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
kubectl() { "$(k8s_bin)/kubectl" --kubeconfig "$KUBECONFIG_OUT" "$@"; }
k8s_bin() { "$here/build.sh" --bin-dir kubernetes; }
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
node_pid() { cat "$STATE/node.pid" 2>/dev/null || true; }
relay_pid() { cat "$STATE/relay.pid" 2>/dev/null || true; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
running() { pid_alive "$(node_pid)"; }

# ---- prerequisites ----------------------------------------------------------------------
check_prerequisites() {
    [ "$(id -u)" -eq 0 ] || die "the bare cluster needs root (network, mount and PID namespaces, cgroups)"
    local missing=() cmd
    for cmd in containerd containerd-shim-runc-v2 runc ctr iptables conntrack ip unshare nsenter \
        openssl curl go gcc podman python3; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ -x /usr/lib/cni/bridge ] || missing+=("/usr/lib/cni/bridge (containernetworking-plugins)")
    [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]}; run 'make cluster-packages' (installs the Debian packages)"
    [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] \
        || die "no cgroup hierarchy under /sys/fs/cgroup"
    # the relay and the node must not compete with something already there
    if [ -e /run/netns ] && ! [ -d /run/netns ]; then die "/run/netns exists and is not a folder"; fi
}

# ---- cgroups: one folder per hierarchy, created here, removed by down -----------------
cgroup_dirs() { # the node's cgroup folder in each v1 hierarchy (cgroup v2: the one)
    local mnt
    while read -r mnt; do echo "$mnt$CGROUP_ROOT"; done < <(
        awk '$9 == "cgroup" || $9 == "cgroup2" {print $5}' /proc/self/mountinfo | sort -u)
}
create_cgroups() {
    local dir parent
    while read -r dir; do
        mkdir -p "$dir"
        # cpuset: a new folder starts with no CPUs and no memory nodes; inherit the parent's
        if [ -f "$dir/cpuset.cpus" ]; then
            parent="$(dirname "$dir")"
            cat "$parent/cpuset.cpus" > "$dir/cpuset.cpus"
            cat "$parent/cpuset.mems" > "$dir/cpuset.mems"
        fi
    done < <(cgroup_dirs)
}
remove_cgroups() {
    local dir i
    while read -r dir; do
        [ -d "$dir" ] || continue
        for ((i = 0; i < 25; i++)); do
            # deepest first; a folder is removable once its last process is gone
            find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$dir" ] || break
            sleep 0.2
        done
        if [ -d "$dir" ]; then log "warning: could not remove $dir (processes left in it?)"; fi
    done < <(cgroup_dirs)
}

# ---- configuration ----------------------------------------------------------------------
render() { # TEMPLATE OUT: substitute the @NAME@ placeholders
    sed -e "s|@STATE@|$STATE|g" -e "s|@NODE_IP@|$NODE_IP|g" -e "s|@NODE_CIDR@|$NODE_CIDR|g" \
        -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@POD_GATEWAY@|$POD_GATEWAY|g" \
        -e "s|@DNS_IP@|$DNS_IP|g" -e "s|@CGROUP_ROOT@|$CGROUP_ROOT|g" \
        -e "s|@PAUSE_IMAGE@|localhost/cryptovol/pause:$PAUSE_VERSION|g" "$1" > "$2"
    if grep -q '@[A-Z_]*@' "$2"; then die "unrendered placeholder in $2"; fi
}

write_state() {
    mkdir -p "$STATE"/{conf/cni,logs,run,cni/ipam,containerd,kubelet}
    bash "$here/pki.sh" "$STATE/pki" "$NODE_NAME" "$NODE_IP" "$API_SERVICE_IP"
    render "$here/conf/containerd.toml" "$STATE/conf/containerd.toml"
    render "$here/conf/kubelet.yaml" "$STATE/conf/kubelet.yaml"
    render "$here/conf/kube-proxy.yaml" "$STATE/conf/kube-proxy.yaml"
    render "$here/conf/cni.conflist" "$STATE/conf/cni/10-cryptovol-bare.conflist"
    # pods that use the node's DNS settings (CoreDNS itself) have no upstream: nothing leaves
    echo "nameserver 127.0.0.1" > "$STATE/conf/resolv.conf"
    # host folders the node needs as mount points and that are not there yet: down removes them
    local dir
    for dir in $PRIVATE_DIRS; do [ -e "$dir" ] || echo "$dir"; done > "$STATE/created-paths"
    cat > "$STATE/node.env" <<EOF
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
NODE_CIDR=$NODE_CIDR
SERVICE_CIDR=$SERVICE_CIDR
PRIVATE_DIRS="$PRIVATE_DIRS"
K8S_BIN=$(k8s_bin)
ETCD_BIN=$("$here/build.sh" --bin-dir etcd)
IMAGE_ARCHIVES="$(tr '\n' ' ' < "$STATE/image-archives")"
EOF
}

# ---- up -----------------------------------------------------------------------------------
wait_for() { # WHAT SECONDS COMMAND...: poll until COMMAND succeeds
    local what="$1" seconds="$2" start=$SECONDS; shift 2
    until "$@" >/dev/null 2>&1; do
        if ! running; then diagnose; die "the node stopped while waiting for $what"; fi
        if ((SECONDS - start >= seconds)); then diagnose; die "$what not ready after ${seconds}s"; fi
        sleep 0.5
    done
    log "$what ready after $((SECONDS - start)) s"
}

diagnose() {
    log "---- node log"; tail -20 "$STATE/logs/node.log" >&2 2>/dev/null || true
    local f
    for f in "$STATE"/logs/*.log; do
        [ -f "$f" ] || continue
        log "---- last errors in $(basename "$f")"
        grep -iE 'error|fatal|fail' "$f" | tail -5 >&2 || true
    done
}

start_node() {
    log "starting the node (network, mount and PID namespaces of its own)"
    # --kill-child: should this launcher ever die, the node gets SIGTERM and shuts down
    setsid unshare --net --mount --propagation private --pid --fork --mount-proc \
        --kill-child=SIGTERM bash "$here/node.sh" "$STATE" > "$STATE/logs/node.log" 2>&1 < /dev/null &
    local launcher=$! child="" i
    for ((i = 0; i < 50; i++)); do
        child="$(cat "/proc/$launcher/task/$launcher/children" 2>/dev/null | awk '{print $1}')"
        [ -n "$child" ] && break
        sleep 0.1
    done
    [ -n "$child" ] || die "the node did not start (see $STATE/logs/node.log)"
    echo "$launcher" > "$STATE/launcher.pid"
    echo "$child" > "$STATE/node.pid"
}

relay() { # NAME HOST_PORT NODE_PORT: host 127.0.0.1:HOST_PORT -> the node's 127.0.0.1:NODE_PORT
    setsid python3 "$here/relay.py" --netns "/proc/$(node_pid)/ns/net" \
        --listen "127.0.0.1:$2" --target "127.0.0.1:$3" > "$STATE/logs/$1.log" 2>&1 < /dev/null &
    echo $! > "$STATE/$1.pid"
}

start_relay() {
    local port
    port="$(free_port)"
    relay relay "$port" 6443
    sed "s|server: https://127.0.0.1:6443|server: https://127.0.0.1:$port|" \
        "$STATE/pki/admin.kubeconfig" > "$KUBECONFIG_OUT"
    chmod 600 "$KUBECONFIG_OUT"
}

node_ready() {
    [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

up() {
    check_prerequisites
    if running; then
        log "already running (node pid $(node_pid)); kubeconfig: $KUBECONFIG_OUT"
        return 0
    fi
    [ -e "$STATE" ] && { log "cleaning up a stopped cluster's state"; down; }
    local start=$SECONDS
    mkdir -p "$STATE"
    prepare > "$STATE/image-archives"
    write_state
    # what the host looks like without the cluster: down checks it looks the same again
    python3 "$here/hoststate.py" snapshot "$BARE/host-before.json"
    create_cgroups
    start_node
    wait_for "the node's processes" 60 test -e "$STATE/run/started"
    start_relay
    wait_for "the apiserver (from the host)" 60 kubectl get --raw /readyz
    wait_for "node $NODE_NAME" "$WAIT_NODE_S" node_ready
    "$here/addons.sh"
    log "cluster up in $((SECONDS - start)) s"
    status
}

prepare() { # the binaries and the cluster's images, built once; prints the images' archives
    "$here/build.sh"
    "$here/images.sh"
}

# ---- down ---------------------------------------------------------------------------------
stop_pid() { # PID SECONDS: SIGTERM, then SIGKILL after SECONDS
    local pid="$1" i
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < $2 * 5; i++)); do pid_alive "$pid" || return 0; sleep 0.2; done
    log "pid $pid did not stop in $2 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

down() {
    stop_pid "$(relay_pid)" 5
    stop_pid "$(cat "$STATE/registry-relay.pid" 2>/dev/null || true)" 5
    stop_pid "$(node_pid)" 40
    stop_pid "$(cat "$STATE/launcher.pid" 2>/dev/null || true)" 10
    remove_cgroups
    local dir
    if [ -f "$STATE/created-paths" ]; then
        while read -r dir; do [ -z "$dir" ] || rmdir "$dir" 2>/dev/null || true; done < "$STATE/created-paths"
    fi
    rm -rf "$STATE" "$KUBECONFIG_OUT"
    if [ -f "$BARE/host-before.json" ]; then
        python3 "$here/hoststate.py" check "$BARE/host-before.json" "$STATE" \
            || die "cluster-down left the above behind"
        rm -f "$BARE/host-before.json"
    fi
    log "down: no cluster process, mount, network namespace, firewall rule or cgroup left"
}

status() {
    if ! running; then log "not running"; return 1; fi
    log "node pid $(node_pid), relay pid $(relay_pid)"
    kubectl get nodes -o wide >&2 || true
    echo "export KUBECONFIG=$KUBECONFIG_OUT"
}

load() { # IMAGE...: from the builder's store into the node's containerd
    running || die "the cluster is not running: make cluster-up K8S_PROVIDER=bare"
    local image id archive wanted=() ids=()
    local podman="$repo/tools/podman.sh" docker=""
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then docker=docker; fi
    touch "$STATE/loaded-images"
    for image in "$@"; do
        if [ -n "$docker" ]; then id="$(docker image inspect -f '{{.Id}}' "$image")"
        else id="$("$podman" image inspect -f '{{.Id}}' "$image")"; fi
        [ -n "$id" ] || die "no image $image"
        # already there from an earlier load of this cluster: nothing to copy
        if grep -qxF "$image $id" "$STATE/loaded-images"; then log "$image already loaded"; continue; fi
        wanted+=("$image"); ids+=("$id")
    done
    [ ${#wanted[@]} -gt 0 ] || return 0
    # one archive for all: the layers the images share are copied once
    archive="$(mktemp "$BARE/load-XXXXXX.tar")"
    if [ -n "$docker" ]; then docker save -o "$archive" "${wanted[@]}"
    else "$podman" save -q -m --format docker-archive -o "$archive" "${wanted[@]}"; fi
    ctr -a "$STATE/containerd/containerd.sock" -n k8s.io images import "$archive" >/dev/null \
        || { rm -f "$archive"; die "could not import ${wanted[*]}"; }
    rm -f "$archive"
    for i in "${!wanted[@]}"; do
        sed -i "\\|^${wanted[$i]} |d" "$STATE/loaded-images"
        echo "${wanted[$i]} ${ids[$i]}" >> "$STATE/loaded-images"
    done
    log "loaded ${wanted[*]}"
}

# ---- registry: for skaffold, which pushes what it builds and deploys it by digest -------
# distribution's registry runs in the node's namespaces (its storage in the state folder, so
# down removes it) on 127.0.0.1:PORT; a relay makes the same address reach it from the host,
# so an image has one name where it is pushed and where containerd pulls it (plain HTTP:
# conf/certs.d). PORT is a free port of the host, chosen at the first start.
registry_answers() { curl -fsS "http://$1/v2/" >/dev/null 2>&1; }
registry() {
    running || die "the cluster is not running: make cluster-up K8S_PROVIDER=bare"
    local addr_file="$STATE/registry.addr" port bin i
    if [ -f "$addr_file" ] && registry_answers "$(cat "$addr_file")"; then
        cat "$addr_file"; return 0
    fi
    "$here/build.sh" registry >&2
    bin="$("$here/build.sh" --bin-dir registry)/registry"
    port="$(free_port)"
    mkdir -p "$STATE/registry" "$STATE/conf/certs.d/127.0.0.1:$port"
    printf '%s\n' 'version: 0.1' 'log: {level: warn}' \
        "storage: {filesystem: {rootdirectory: $STATE/registry}, delete: {enabled: true}}" \
        "http: {addr: \"127.0.0.1:$port\"}" > "$STATE/conf/registry.yml"
    printf '%s\n' "server = \"http://127.0.0.1:$port\"" "[host.\"http://127.0.0.1:$port\"]" \
        '  capabilities = ["pull", "resolve"]' > "$STATE/conf/certs.d/127.0.0.1:$port/hosts.toml"
    # in all the node's namespaces, a child of its PID 1 there: it ends with the node
    setsid nsenter --target "$(node_pid)" --net --mount --pid -- \
        "$bin" serve "$STATE/conf/registry.yml" > "$STATE/logs/registry.log" 2>&1 < /dev/null &
    relay registry-relay "$port" "$port"
    for ((i = 0; i < 50; i++)); do registry_answers "127.0.0.1:$port" && break; sleep 0.2; done
    registry_answers "127.0.0.1:$port" || die "the registry did not answer (see $STATE/logs/registry.log)"
    echo "127.0.0.1:$port" > "$addr_file"
    log "registry on 127.0.0.1:$port, from the host and in the node"
    cat "$addr_file"
}

case "${1:-}" in
    up) up ;;
    prepare) prepare >/dev/null ;;
    down) down ;;
    status) status ;;
    load) shift; load "$@" ;;
    registry) registry ;;
    *) echo "usage: $0 up|prepare|down|status|load IMAGE...|registry" >&2; exit 2 ;;
esac
