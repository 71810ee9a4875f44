#!/usr/bin/env bash
# The bare node: PID 1 of a PID namespace of its own, inside network and mount namespaces
# of its own (started by cluster.sh up; never run it by hand):
#   unshare --net --mount --propagation private --pid --fork --mount-proc bash node.sh STATE
# It wires the network namespace, hides the few fixed host paths the components write to
# behind private tmpfs mounts, then runs etcd, the control plane, containerd, kubelet and
# kube-proxy. On SIGTERM it stops kubelet, then everything else; when it exits, the kernel
# ends whatever is left in its PID namespace and the namespaces vanish with it.
set -uo pipefail
STATE="$1"
# shellcheck source=/dev/null
source "$STATE/node.env"
LOGS="$STATE/logs"
RUN="$STATE/run"
mkdir -p "$LOGS" "$RUN"
log() { printf '%s [node] %s\n' "$(date +%T)" "$*"; }

# ---- network: lo, a veth pair holding the node IP, a route for Service IPs; no uplink --
ip link set lo up
ip link add node0 type veth peer name node0-peer
ip link set node0-peer up
ip addr add "$NODE_IP/${NODE_CIDR#*/}" dev node0
ip link set node0 up
ip route add "$SERVICE_CIDR" dev node0

# ---- private views of the fixed host paths containerd, kubelet and CNI write to -------
for dir in $PRIVATE_DIRS; do
    mkdir -p "$dir"
    mount -t tmpfs -o mode=0755 cryptovol-bare "$dir"
done
# mounts propagate inside this namespace as on a real node (a pod's HostToContainer volume
# sees mounts made after it started); the host's mounts stay private to it
mount --make-rshared /
# kubelet sets three kernel tunables at start; in this mount namespace it finds files that
# already hold the values it wants, so the machine's own settings are never written
mkdir -p "$RUN/sysctl"
for entry in kernel/panic=10 kernel/panic_on_oops=1 vm/overcommit_memory=1; do
    key="${entry%=*}"
    echo "${entry#*=}" > "$RUN/sysctl/${key//\//.}"
    mount --bind "$RUN/sysctl/${key//\//.}" "/proc/sys/$key"
done
export XTABLES_LOCKFILE="$RUN/xtables.lock" PATH="$K8S_BIN:$ETCD_BIN:$PATH"

# ---- components -------------------------------------------------------------------------
start() { # NAME COMMAND...
    local name="$1"; shift
    "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
    log "started $name (pid $!)"
}
wait_for() { # WHAT SECONDS COMMAND...
    local what="$1" seconds="$2" i; shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        "$@" > /dev/null 2>&1 && { log "$what ready"; return 0; }
        sleep 0.2
    done
    log "$what not ready after ${seconds}s"
    return 1
}
pki="$STATE/pki"
admin_curl=(curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key")

start etcd etcd --name "$NODE_NAME" --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --log-level warn
wait_for etcd 30 curl -fsS http://127.0.0.1:2379/health || exit 1

start apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$pki/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=Node,RBAC --allow-privileged=true --profiling=false
wait_for apiserver 60 "${admin_curl[@]}" https://127.0.0.1:6443/readyz || exit 1

start controller-manager kube-controller-manager --kubeconfig="$pki/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$pki/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$pki/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --cluster-signing-cert-file="$pki/ca.crt" \
    --cluster-signing-key-file="$pki/ca.key" --root-ca-file="$pki/ca.crt" \
    --service-account-private-key-file="$pki/sa.key" --use-service-account-credentials=true \
    --leader-elect=false --profiling=false
start scheduler kube-scheduler --kubeconfig="$pki/scheduler.kubeconfig" \
    --authentication-kubeconfig="$pki/scheduler.kubeconfig" \
    --authorization-kubeconfig="$pki/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false

start containerd containerd --config "$STATE/conf/containerd.toml"
wait_for containerd 30 test -S "$STATE/containerd/containerd.sock" || exit 1
for archive in $IMAGE_ARCHIVES; do
    ctr -a "$STATE/containerd/containerd.sock" -n k8s.io images import "$archive" \
        >> "$LOGS/images.log" 2>&1 || log "could not import $archive (see logs/images.log)"
done

start kubelet kubelet --config="$STATE/conf/kubelet.yaml" --kubeconfig="$pki/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$STATE/kubelet" --v=1
start kube-proxy kube-proxy --config="$STATE/conf/kube-proxy.yaml" --hostname-override="$NODE_NAME"
touch "$RUN/started"

# ---- until SIGTERM ----------------------------------------------------------------------
stop() { # NAME SECONDS: SIGTERM, then SIGKILL after SECONDS
    local pid i
    pid="$(cat "$RUN/$1.pid" 2>/dev/null)" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < $2 * 5; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null
}
shutdown() {
    trap - TERM INT
    log "stopping"
    # kubelet first, so nothing restarts the pods; then the pods and every other process
    stop kubelet 10
    stop kube-proxy 5
    kill -TERM -1 2>/dev/null
    # this PID namespace's /proc lists only its own processes: wait until only PID 1 is left
    local procs i
    for ((i = 0; i < 50; i++)); do
        procs=(/proc/[0-9]*)
        [ "${#procs[@]}" -le 1 ] && break
        sleep 0.2
    done
    log "stopped"
    exit 0
}
trap shutdown TERM INT
while true; do
    sleep 3600 &
    wait $!
done
