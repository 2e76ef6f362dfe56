#!/usr/bin/env bash
# `make run`: the operator on an embedded local control plane, no cluster
# needed. Builds what is missing, starts the control plane (or reuses it),
# installs the CRDs, runs the operator in the foreground with its webhook
# registered by URL on 127.0.0.1, creates the AIO template and a warm pool
# of 3, serves a first claim from it (its launch type and time to Ready
# shown), and prints commands to try. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=tests/controlplane/cluster.sh
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

say "building the operator (cargo build --bin sandbox-operator)"
cargo build --bin sandbox-operator

started_cluster=0
operator_pid=""
webhook_url=""
first_claim=""
# Ctrl-C reaches the whole foreground process group: the operator stops on its
# own SIGINT and this script cleans up, once (a second Ctrl-C does not cut the
# clean-up short), and then exits instead of resuming where it was.
cleanup() {
  trap '' INT TERM
  trap - EXIT
  if [[ -n $first_claim ]]; then
    # Deleted while the operator runs, so it lifts its policy's hold itself.
    kubectl delete sandboxclaim "$first_claim" --request-timeout=10s --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  if [[ -n $operator_pid ]] && kill -0 "$operator_pid" 2>/dev/null; then
    say "stopping the operator"
    kill -TERM "$operator_pid" 2>/dev/null || true
    # Graceful stop (it unregisters its webhook), bounded.
    for _ in $(seq 1 100); do
      kill -0 "$operator_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
  if [[ -n $webhook_url ]]; then
    # Left only when the operator did not stop gracefully; a leftover
    # registration of a dead URL would make the API server reject Sandboxes.
    local leftover
    leftover=$(kubectl get mutatingwebhookconfiguration/sandbox-operator \
      validatingwebhookconfiguration/sandbox-operator --ignore-not-found --request-timeout=10s \
      -o jsonpath='{range .items[*]}{.kind}/{.metadata.name} {.webhooks[*].clientConfig.url}{"\n"}{end}' 2>/dev/null |
      awk -v url="$webhook_url/" 'index($0, url) { print $1 }' || true)
    if [[ -n $leftover ]]; then
      say "removing the webhook configurations the operator left behind"
      # shellcheck disable=SC2086 # one kind/name per word
      kubectl delete $leftover --request-timeout=10s --ignore-not-found >/dev/null 2>&1 || true
    fi
    # The pool's NetworkPolicy holds until its idle Pods are gone, which only
    # the (now stopped) operator would see: lift the holds first.
    kubectl get networkpolicies -l app.kubernetes.io/managed-by=sandbox-operator --request-timeout=10s \
      -o jsonpath='{range .items[?(@.metadata.finalizers)]}{.metadata.name}{"\n"}{end}' 2>/dev/null |
      xargs -r -n1 kubectl patch networkpolicy --request-timeout=10s --type=json \
        -p '[{"op":"remove","path":"/metadata/finalizers"}]' >/dev/null 2>&1 || true
    kubectl delete -f examples/warmpool.yaml --request-timeout=10s --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  if [[ $started_cluster == 1 ]]; then
    say "stopping the local control plane"
    $cluster down || true
  fi
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

# Whether `up` started the control plane (then Ctrl-C stops it) or reused a
# running one (then it is left alone): did it start a new kube-apiserver? Not
# `cluster.sh kubeconfig` beforehand, which also fails when a busy API server
# is slow to answer /readyz, and `up` then reuses it.
cp_state=${SANDBOX_CP_STATE:-/tmp/sandbox-operator-cp}
[[ $cp_state == /* ]] || cp_state=$PWD/$cp_state
apiserver_pid() { cat "${cp_state%/}/pids/kube-apiserver.pid" 2>/dev/null || true; }
apiserver_before=$(apiserver_pid)
say "starting the local control plane (the first run on a machine builds it from Go modules: ~20 min)"
kubeconfig=$($cluster up | tail -n 1)
if [[ -z $apiserver_before || $(apiserver_pid) != "$apiserver_before" ]]; then started_cluster=1; fi
export KUBECONFIG=$kubeconfig
eval "$($cluster env)"

# retry SECONDS WHAT COMMAND...: runs COMMAND until it succeeds (once a second),
# showing its last output if it never does. Right after a (re)start the API
# server may still refuse or not yet know a resource; that is a wait, not a failure.
retry() {
  local seconds=$1 what=$2 out; shift 2
  local deadline=$((SECONDS + seconds))
  until out=$("$@" 2>&1); do
    if ((SECONDS >= deadline)); then
      say "gave up after ${seconds}s: $what"
      printf '%s\n' "$out" >&2
      return 1
    fi
    sleep 1
  done
}

# established CRD: exits 0 when the CRD's Established condition is True. A CRD
# the API server has not written a status for yet simply prints nothing (no
# `kubectl wait`, which fails on a missing .status.conditions).
established() {
  [[ $(kubectl get crd "$1" --request-timeout=10s \
    -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]]
}

say "installing the CRDs"
crd_file=charts/sandbox-operator/crds/crds.yaml
retry 60 "kubectl apply -f $crd_file" \
  kubectl apply --server-side --force-conflicts -f "$crd_file"
for crd in $(sed -n 's/^  name: \(.*\..*\)$/\1/p' "$crd_file"); do
  retry 60 "CRD $crd Established" established "$crd"
done
retry 60 "namespace sandbox-system" \
  bash -c 'kubectl create namespace sandbox-system --dry-run=client -o yaml | kubectl apply -f -'

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
metrics_port=${SANDBOX_METRICS_PORT:-$(free_port)}
webhook_port=${SANDBOX_WEBHOOK_PORT:-$(free_port)}
webhook_url=https://127.0.0.1:$webhook_port

say "starting the operator (metrics http://127.0.0.1:$metrics_port/metrics, webhook https://127.0.0.1:$webhook_port)"
target/debug/sandbox-operator run \
  --leader-elect=false \
  --operator-namespace sandbox-system \
  --metrics-addr "127.0.0.1:$metrics_port" \
  --webhook-addr "127.0.0.1:$webhook_port" \
  --register-webhook-url "$webhook_url" \
  --register-ownership-guard=true &
operator_pid=$!

ready_url=http://127.0.0.1:$metrics_port/readyz
for _ in $(seq 1 300); do
  curl -fs "$ready_url" >/dev/null 2>&1 && break
  kill -0 "$operator_pid" 2>/dev/null || { say "the operator exited; see its log above"; exit 1; }
  sleep 0.2
done
curl -fs "$ready_url" >/dev/null 2>&1 || { say "the operator is not ready after 60 s ($ready_url); see its log above"; exit 1; }

say "creating the AIO SandboxTemplate and a SandboxWarmPool of 3 in namespace default"
retry 60 "kubectl apply -f examples/template.yaml -f examples/warmpool.yaml" \
  kubectl apply -f examples/template.yaml -f examples/warmpool.yaml
# The pool has no status until the operator first writes it: read it as 0.
ready=0
for _ in $(seq 1 300); do
  ready=$(kubectl get swp aio-pool --request-timeout=10s -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)
  [[ ${ready:-0} =~ ^[0-9]+$ ]] || ready=0
  ((ready >= 3)) && break
  sleep 0.2
done
((ready >= 3)) || { say "the warm pool aio-pool has $ready of 3 Ready Pods after 60 s"; exit 1; }

# pool_ready N: waits (60 s at most) until the pool has N Ready idle Pods.
pool_ready() {
  for _ in $(seq 1 300); do
    ready=$(kubectl get swp aio-pool --request-timeout=10s -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)
    [[ ${ready:-0} =~ ^[0-9]+$ ]] || ready=0
    ((ready >= $1)) && return 0
    sleep 0.2
  done
  return 1
}

# A first claim, served from the pool, so the operator is seen serving one.
say "serving a first claim: kubectl create -f examples/claim.yaml"
first_claim=$(kubectl create -f examples/claim.yaml --request-timeout=10s -o name)
first_claim=${first_claim##*/}
kubectl wait --for=condition=Ready "sandboxclaim/$first_claim" --timeout=30s >/dev/null ||
  { say "claim $first_claim is not Ready after 30 s"; kubectl get sbc "$first_claim" -o yaml >&2; exit 1; }
kubectl get sbc "$first_claim" --request-timeout=10s >&2
seconds=$(kubectl get sbc "$first_claim" --request-timeout=10s -o jsonpath='{.status.timeToReadySeconds}' 2>/dev/null || true)
printf 'first claim %s: launch type %s, Ready %s s after the API server admitted it\n' "$first_claim" \
  "$(kubectl get sbc "$first_claim" --request-timeout=10s -o jsonpath='{.status.launchType}')" "${seconds:-?}" >&2
# The pool refilled at once: wait for it again.
pool_ready 3 || { say "the warm pool aio-pool has $ready of 3 Ready Pods 60 s after the first claim"; exit 1; }

cat >&2 <<EOT

sandbox-operator is ready: warm pool aio-pool has ${ready} idle Pods.

In another shell:
  export KUBECONFIG=$kubeconfig
  kubectl create -f examples/claim.yaml          # a claim, served warm in milliseconds
  kubectl get sbc,sbx                              # LaunchType warm, Ready True
  kubectl get agents                               # everything the operator manages
  kubectl scale swp/aio-pool --replicas=0          # empty the pool ...
  kubectl create -f examples/claim.yaml            # ... and the next claim goes cold
  kubectl apply -f examples/aio-sandbox.yaml       # the seed's Sandbox, unchanged
  curl -s http://127.0.0.1:$metrics_port/metrics | grep sandbox_operator_claim

Ctrl-C stops the operator$( [[ $started_cluster == 1 ]] && echo " and the control plane" ).
EOT
wait "$operator_pid"
