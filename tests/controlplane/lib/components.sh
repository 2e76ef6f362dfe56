# shellcheck shell=bash
# How each component starts: its binary and its flags (every address
# 127.0.0.1).
# Sourced by cluster.sh, which defines what these use (state, here, log,
# die, api, port, start_proc and the settings).

start_kwok() {
  mkdir -p "$state/kwok-home"
  # HOME points at an empty dir so that no ~/.kwok/kwok.yaml of the user is loaded.
  # No --server-address / --node-port: kwok serves nothing, it only calls the API server.
  HOME=$state/kwok-home start_proc kwok \
    --kubeconfig="$state/kwok.kubeconfig" \
    --config="$state/kwok-stages.yaml" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 \
    --cidr="$pod_cidr" \
    --node-lease-duration-seconds=40
}

start_etcd() {
  local etcd_url=http://127.0.0.1:$(port ETCD_CLIENT_PORT) peer_url=http://127.0.0.1:$(port ETCD_PEER_PORT)
  start_proc etcd \
    --name=sandbox-test \
    --data-dir="$state/data/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="$peer_url" --initial-advertise-peer-urls="$peer_url" \
    --initial-cluster="sandbox-test=$peer_url" \
    --unsafe-no-fsync \
    --log-level=warn
}

start_apiserver() {
  local pki=$state/pki etcd_url=http://127.0.0.1:$(port ETCD_CLIENT_PORT)
  start_proc kube-apiserver \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --secure-port="$(port APISERVER_PORT)" \
    --etcd-servers="$etcd_url" \
    --cert-dir="$pki/apiserver-generated" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range="$service_cidr" \
    --allow-privileged=true \
    --profiling=false
}

# The client rate limit of each controller (one client per controller's
# ServiceAccount) is raised from the default 20 QPS: at 20 the garbage
# collector deletes about 3 claims' worth of dependents per second (two
# requests per Sandbox, Pod, Service and NetworkPolicy), so a 5 claims/s soak
# piled up orphaned Sandboxes and Pods until the pool could not refill.
start_controller_manager() {
  local pki=$state/pki ctrls
  ctrls=$(IFS=,; echo "${controllers[*]}")
  start_secured kube-controller-manager CONTROLLER_MANAGER_PORT \
    --controllers="$ctrls" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --service-cluster-ip-range="$service_cidr" \
    --cluster-name=sandbox-test \
    --kube-api-qps=100 \
    --kube-api-burst=200
}

start_scheduler() {
  start_secured kube-scheduler SCHEDULER_PORT
}

# Starts COMPONENT (kube-controller-manager or kube-scheduler) with what both
# share: its own kubeconfig for the API, authentication and authorization,
# its secure port (named by PORT_VAR) on 127.0.0.1 with a generated
# certificate, no leader election, no profiling; then its own flags.
start_secured() {
  local comp=$1 port_var=$2; shift 2
  local kubeconfig=$state/$comp.kubeconfig
  start_proc "$comp" \
    --kubeconfig="$kubeconfig" \
    --authentication-kubeconfig="$kubeconfig" \
    --authorization-kubeconfig="$kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$(port "$port_var")" \
    --cert-dir="$state/pki/$comp-generated" \
    --leader-elect=false \
    --profiling=false \
    "$@"
}
