#!/usr/bin/env bash
# Self-signed PKI of the one-node bare cluster, with openssl only:
#   k8s/bare/pki.sh DIR NODE_NAME NODE_IP API_SERVICE_IP
# A CA, the apiserver's serving certificate, one client certificate per component (the
# identities RBAC's default roles expect), the kubelet's serving certificate, the
# service-account key pair and a kubeconfig per component (server https://127.0.0.1:6443,
# inside the node's network namespace). Keys are readable by root only.
set -euo pipefail
dir="$1" node="$2" node_ip="$3" api_ip="$4"
umask 077
mkdir -p "$dir"
cd "$dir"

openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=cryptovol-bare-ca" -out ca.crt

# sign NAME CN ORG SANS EXTENDED_KEY_USAGE
sign() {
    local name="$1" cn="$2" org="$3" sans="$4" usage="$5" subject
    subject="/CN=$cn"
    [ -z "$org" ] || subject="/O=$org/CN=$cn"
    openssl genrsa -out "$name.key" 2048 2>/dev/null
    openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [ -z "$sans" ] || echo "subjectAltName=$sans"
    } > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

sign apiserver kube-apiserver "" "IP:127.0.0.1,IP:$node_ip,IP:$api_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth
sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" clientAuth
sign admin kubernetes-admin system:masters "" clientAuth
sign controller-manager system:kube-controller-manager "" "" clientAuth
sign scheduler system:kube-scheduler "" "" clientAuth
sign kube-proxy system:kube-proxy "" "" clientAuth
sign kubelet-client "system:node:$node" system:nodes "" clientAuth
sign kubelet-serving "$node" system:nodes "IP:127.0.0.1,IP:$node_ip,DNS:$node" serverAuth
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

# kubeconfig FILE USER CERT [SERVER]
kubeconfig() {
    cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cryptovol-bare
  cluster:
    certificate-authority: $dir/ca.crt
    server: ${4:-https://127.0.0.1:6443}
users:
- name: $2
  user:
    client-certificate: $dir/$3.crt
    client-key: $dir/$3.key
contexts:
- name: cryptovol-bare
  context: {cluster: cryptovol-bare, user: $2}
current-context: cryptovol-bare
EOF
}
kubeconfig admin.kubeconfig kubernetes-admin admin
kubeconfig controller-manager.kubeconfig system:kube-controller-manager controller-manager
kubeconfig scheduler.kubeconfig system:kube-scheduler scheduler
kubeconfig kube-proxy.kubeconfig system:kube-proxy kube-proxy
kubeconfig kubelet.kubeconfig "system:node:$node" kubelet-client
