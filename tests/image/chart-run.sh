#!/usr/bin/env bash
# tests/image/chart-run.sh: `sandbox-operator run` started from the unpacked
# image as the chart's Deployment would start it, against the local control
# plane, serves a warm claim.
#
# From the installed release's Deployment it takes: the args (only the two
# listen addresses moved to free ports on 127.0.0.1), the user
# (runAsUser/runAsGroup, which must be the image's user), the policy
# ConfigMap mounted at the Deployment's mountPath, and the ServiceAccount,
# whose TokenRequest token and the cluster CA are mounted where the kubelet
# puts them (/var/run/secrets/kubernetes.io/serviceaccount); the operator
# finds the API server through KUBERNETES_SERVICE_HOST/PORT (127.0.0.1), as
# in a Pod. Root file system read-only, no other file from the host.
# The release's webhooks are registered by URL on 127.0.0.1 (failurePolicy
# Fail), so every object below is admitted by the operator in the image.
#
# Environment: ROOTFS, IMAGE_USER (uid:gid of the image config), WORK (a
# scratch dir), SANDBOX_KUBECONFIG.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/image/lib.sh
: "${ROOTFS:?} ${IMAGE_USER:?} ${WORK:?} ${SANDBOX_KUBECONFIG:?}"
eval "$(tests/controlplane/cluster.sh env)"
export KUBECONFIG=$SANDBOX_KUBECONFIG

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
step() { echo "[$(date +%T)] $*"; }

ns=image-$(date +%s)-$RANDOM
metrics_port=$(free_port)
webhook_port=$(free_port)
log=$WORK/operator.log
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  helm uninstall "$ns" --namespace "$ns" >/dev/null 2>&1 || true
  # A cold claim's NetworkPolicy holds until its Pod is gone, which only the
  # (now stopped) operator sees: lift the holds, or the namespace stays.
  kubectl get networkpolicies -n "$ns" -l app.kubernetes.io/managed-by=sandbox-operator \
    -o jsonpath='{range .items[?(@.metadata.finalizers)]}{.metadata.name}{"\n"}{end}' 2>/dev/null |
    xargs -r -n1 kubectl patch networkpolicy -n "$ns" --type=json \
      -p '[{"op":"remove","path":"/metadata/finalizers"}]' >/dev/null 2>&1 || true
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

entry=$(jq -er '.process.args[0]' "$ROOTFS/../config.json")
kubectl create namespace "$ns"
# The CRDs as the image prints them, applied like the integration tests do.
IMAGE_ENV=(PATH=/usr/local/bin)
in_image "$ROOTFS" "$IMAGE_USER" -- "$entry" crd >"$WORK/image-crds.yaml"
kubectl apply --server-side --force-conflicts --field-manager=sandbox-operator-tests \
  -f "$WORK/image-crds.yaml" >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/sandboxes.agents.x-k8s.io crd/sandboxclaims.extensions.agents.x-k8s.io \
  crd/sandboxtemplates.extensions.agents.x-k8s.io crd/sandboxwarmpools.extensions.agents.x-k8s.io
helm install "$ns" charts/sandbox-operator --namespace "$ns" --skip-crds \
  --set "webhook.url=https://127.0.0.1:$webhook_port" --set "controller.watchNamespace=$ns" >/dev/null
step "release $ns installed"

deployment=$(kubectl get deployment -n "$ns" -l "app.kubernetes.io/instance=$ns" -o json | jq -e '.items[0]')
pod=$(jq -e '.spec.template.spec' <<<"$deployment")
container=$(jq -e '.containers[0]' <<<"$pod")
chart_user="$(jq -er .securityContext.runAsUser <<<"$pod"):$(jq -er .securityContext.runAsGroup <<<"$pod")"
[[ $chart_user == "$IMAGE_USER" ]] || fail "the chart runs as $chart_user, the image as $IMAGE_USER"
[[ $(jq -r .securityContext.readOnlyRootFilesystem <<<"$container") == true ]] || fail "the chart's root file system is writable"
[[ $(jq -r .command <<<"$container") == null ]] || fail "the chart overrides the image's entrypoint"

args=()
while IFS= read -r arg; do
  case $arg in
  --metrics-addr=*) arg=--metrics-addr=127.0.0.1:$metrics_port ;;
  --webhook-addr=*) arg=--webhook-addr=127.0.0.1:$webhook_port ;;
  esac
  args+=("$arg")
done < <(jq -r '.args[]' <<<"$container")
echo "args: ${args[*]}"

# The policy ConfigMap, where the Deployment mounts it.
policy_map=$(jq -er '.volumes[] | select(.name == "policy") | .configMap.name' <<<"$pod")
policy_path=$(jq -er '.volumeMounts[] | select(.name == "policy") | .mountPath' <<<"$container")
mkdir -p "$WORK/policy" "$WORK/serviceaccount"
kubectl get configmap "$policy_map" -n "$ns" -o json |
  jq -r '.data | to_entries[] | @base64 "\(.key) \(.value)"' | while read -r key value; do
    base64 -d <<<"$value" >"$WORK/policy/$(base64 -d <<<"$key")"
  done
ls "$WORK/policy"

# The ServiceAccount's token and the cluster CA, as the kubelet mounts them.
service_account=$(jq -er .serviceAccountName <<<"$pod")
kubectl create token "$service_account" -n "$ns" --duration=1h >"$WORK/serviceaccount/token"
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
  base64 -d >"$WORK/serviceaccount/ca.crt"
echo -n "$ns" >"$WORK/serviceaccount/namespace"
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
[[ $server =~ ^https://127\.0\.0\.1:([0-9]+)$ ]] || fail "the API server is not on 127.0.0.1: $server"
api_port=${BASH_REMATCH[1]}

IMAGE_ENV=(
  "POD_NAME=$ns-image" "POD_NAMESPACE=$ns"
  KUBERNETES_SERVICE_HOST=127.0.0.1 "KUBERNETES_SERVICE_PORT=$api_port"
  "RUST_LOG=info,kube_runtime=warn,kube_client=warn"
)
while IFS= read -r pair; do IMAGE_ENV+=("$pair"); done < <(jq -r '.env[] | select(.value) | "\(.name)=\(.value)"' <<<"$container")
(IN_IMAGE_EXEC=1 in_image "$ROOTFS" "$chart_user" \
  "$WORK/serviceaccount:/var/run/secrets/kubernetes.io/serviceaccount" "$WORK/policy:$policy_path" \
  -- "$entry" "${args[@]}") >"$log" 2>&1 &
pid=$!
show_log() { echo "--- operator log"; cat "$log"; }
trap 'status=$?; ((status == 0)) || show_log; cleanup' EXIT

ready=
for _ in $(seq 180); do
  if curl -fsS --noproxy '*' --max-time 2 "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$pid" 2>/dev/null || fail "the operator exited"
  sleep 0.5
done
[[ -n $ready ]] || fail "/readyz did not answer 200 within 90 s"
step "operator from the image is ready (pid $pid)"

objects=$(cat <<'EOF'
apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxTemplate
metadata: {name: image}
spec:
  podTemplate:
    metadata:
      annotations: {sandbox.test/start-delay-ms: "300"}
    spec:
      containers:
        - name: agent
          image: busybox
---
apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxWarmPool
metadata: {name: image}
spec:
  replicas: 1
  sandboxTemplateRef: {name: image}
EOF
)
# The webhook may need a moment: the operator injects its caBundle first.
admitted=
for _ in $(seq 60); do
  if kubectl apply -n "$ns" -f - <<<"$objects"; then admitted=1; break; fi
  sleep 1
done
[[ -n $admitted ]] || fail "template and pool were not admitted within 60 s"
kubectl wait -n "$ns" --for=jsonpath='{.status.readyReplicas}'=1 sandboxwarmpool/image --timeout=90s
step "pool of 1 Ready"

kubectl create -n "$ns" -f - <<'EOF'
apiVersion: extensions.agents.x-k8s.io/v1alpha1
kind: SandboxClaim
metadata: {name: image-claim}
spec:
  sandboxTemplateRef: {name: image}
EOF
kubectl wait -n "$ns" --for=condition=Ready sandboxclaim/image-claim --timeout=90s
launch=$(kubectl get -n "$ns" sandboxclaim/image-claim -o jsonpath='{.status.launchType}')
step "claim Ready, launchType=$launch"
[[ $launch == warm ]] || fail "the claim was served $launch, not warm"

forbidden=$(grep -iE 'forbidden|"code":403|code: 403' "$log" || true)
[[ -z $forbidden ]] || fail "the API server refused the operator something: $forbidden"

kill -TERM "$pid"
for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$pid" 2>/dev/null; then fail "no exit 30 s after SIGTERM"; fi
wait "$pid" && status=0 || status=$?
pid=
((status == 0)) || fail "the operator exited with $status after SIGTERM"
step "stopped cleanly"
