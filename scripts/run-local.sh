#!/usr/bin/env bash
# `make run`: the operator on an embedded local control plane, no cluster
# needed. Builds what is missing, starts the control plane (or reuses it),
# installs the CRDs, runs the operator in the foreground with its webhook
# registered by URL on 127.0.0.1, creates the AIO template and a warm pool
# of 3, and prints commands to try. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=tests/controlplane/cluster.sh
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

say "building the operator (cargo build --bin sandbox-operator)"
cargo build --bin sandbox-operator

started_cluster=0
if ! $cluster kubeconfig >/dev/null 2>&1; then started_cluster=1; fi
say "starting the local control plane (the first run on a machine builds it from Go modules: ~20 min)"
kubeconfig=$($cluster up | tail -n 1)
export KUBECONFIG=$kubeconfig
eval "$($cluster env)"

operator_pid=""
cleanup() {
  trap - INT TERM EXIT
  if [[ -n $operator_pid ]] && kill -0 "$operator_pid" 2>/dev/null; then
    say "stopping the operator"
    kill -TERM "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
  kubectl delete -f examples/warmpool.yaml --ignore-not-found --wait=false >/dev/null 2>&1 || true
  if [[ $started_cluster == 1 ]]; then
    say "stopping the local control plane"
    $cluster down || true
  fi
}
trap cleanup INT TERM EXIT

say "installing the CRDs"
kubectl apply --server-side --force-conflicts -f charts/sandbox-operator/crds/crds.yaml >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace sandbox-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
metrics_port=${SANDBOX_METRICS_PORT:-$(free_port)}
webhook_port=${SANDBOX_WEBHOOK_PORT:-$(free_port)}

say "starting the operator (metrics http://127.0.0.1:$metrics_port/metrics, webhook https://127.0.0.1:$webhook_port)"
target/debug/sandbox-operator run \
  --leader-elect=false \
  --operator-namespace sandbox-system \
  --metrics-addr "127.0.0.1:$metrics_port" \
  --webhook-addr "127.0.0.1:$webhook_port" \
  --register-webhook-url "https://127.0.0.1:$webhook_port" &
operator_pid=$!

for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$operator_pid" 2>/dev/null || { say "the operator exited; see its log above"; exit 1; }
  sleep 0.2
done

say "creating the AIO SandboxTemplate and a SandboxWarmPool of 3 in namespace default"
kubectl apply -f examples/template.yaml -f examples/warmpool.yaml >/dev/null
for _ in $(seq 1 300); do
  ready=$(kubectl get swp aio-pool -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)
  [[ ${ready:-0} -ge 3 ]] && break
  sleep 0.2
done

cat >&2 <<EOT

sandbox-operator is ready: warm pool aio-pool has ${ready:-0} idle Pods.

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
