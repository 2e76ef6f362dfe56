#!/usr/bin/env bash
# A real local Kubernetes control plane for the tests, without Docker or a kubelet:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK (which plays
# the kubelet of one fake Node), built by build.sh and run as plain processes that
# bind and dial 127.0.0.1 only. `up` also creates the Node "kwok-node-0" (label
# type=kwok) and the default StorageClass "kwok-volume" whose claims kwok binds at once;
# Pod and volume behaviour is defined in kwok-stages.yaml.
#
#   cluster.sh up          start it (or reuse it when it already runs and is healthy);
#                          the last line of stdout is the absolute admin kubeconfig path
#   cluster.sh down        stop the processes it started (by their recorded pids) and
#                          remove its state directory
#   cluster.sh env         print `export KUBECONFIG=...` and `export PATH=<bin dir>:$PATH`
#   cluster.sh kubeconfig  print the kubeconfig path if the cluster is up, else exit 1
#
# Fault injection (for the fault tests; only on a control plane you own, e.g. a private
# SANDBOX_CP_STATE). Each acts on the pid recorded in pids/COMPONENT.pid, and only after
# checking /proc/PID/cmdline is that component's binary; never by process name:
#   cluster.sh restart COMPONENT   stop (SIGTERM, SIGKILL after 5 s) and start it again with
#                                  the same flags and ports; waits until it serves again
#   cluster.sh stop COMPONENT      freeze it (SIGSTOP); requests to it hang
#   cluster.sh cont COMPONENT      resume it (SIGCONT)
#   cluster.sh pid COMPONENT       print its pid
# COMPONENT is one of: etcd kube-apiserver kube-controller-manager kube-scheduler kwok
#
# Environment:
#   SANDBOX_CP_STATE                 state directory (certs, kubeconfigs, logs/<component>.log,
#                                    pids, etcd data); default /tmp/sandbox-operator-cp
#   SANDBOX_CP_POD_START_DELAY_MS    at `up`: default delay before a Pod becomes Ready
#                                    (default 0); a Pod's annotation
#                                    sandbox.test/start-delay-ms overrides it
#   SANDBOX_CP_CACHE                 build cache root (see build.sh)
#   SANDBOX_CP_CONTROLLERS_OFF       comma-separated kube-controller-manager controllers
#                                    to leave out (diagnostics only: the tests need them
#                                    all), e.g. endpoints-controller,endpointslice-controller;
#                                    read whenever the controller-manager starts (`up`,
#                                    `restart kube-controller-manager`); a name not in the
#                                    list below is refused
#
# Progress messages go to stderr. Needs bash, openssl, curl, python3 and flock.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${SANDBOX_CP_STATE:-/tmp/sandbox-operator-cp}
[[ $state == /* ]] || state=$PWD/$state
state=${state%/}
lockfile=$state.lock

# shellcheck source=tests/controlplane/lib/setup.sh
source "$here/lib/setup.sh"
# shellcheck source=tests/controlplane/lib/components.sh
source "$here/lib/components.sh"

components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
node_name=kwok-node-0
service_cidr=10.0.0.0/24
pod_cidr=10.244.0.0/16
# Controllers of kube-controller-manager (names as in `kube-controller-manager --help`).
controllers=(
  garbage-collector-controller
  namespace-controller
  serviceaccount-controller
  serviceaccount-token-controller
  root-ca-certificate-publisher-controller
  clusterrole-aggregation-controller
  node-lifecycle-controller
  persistentvolumeclaim-protection-controller
  persistentvolume-protection-controller
  pod-garbage-collector-controller
  deployment-controller
  replicaset-controller
  statefulset-controller
  daemonset-controller
  job-controller
  cronjob-controller
  ttl-after-finished-controller
  disruption-controller
  resourcequota-controller
  endpoints-controller
  endpointslice-controller
  endpointslice-mirroring-controller
)

log() { printf '[controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# SANDBOX_CP_CONTROLLERS_OFF: drop the named controllers from the list.
if [[ -n ${SANDBOX_CP_CONTROLLERS_OFF:-} ]]; then
  IFS=, read -ra controllers_off <<<"$SANDBOX_CP_CONTROLLERS_OFF"
  for name in "${controllers_off[@]}"; do
    name=${name// /}
    [[ -n $name ]] || continue # a stray comma or space
    kept=()
    for c in "${controllers[@]}"; do
      [[ $c == "$name" ]] || kept+=("$c")
    done
    (( ${#kept[@]} < ${#controllers[@]} )) ||
      die "SANDBOX_CP_CONTROLLERS_OFF: '$name' is not one of the controllers this control plane runs: ${controllers[*]}"
    controllers=("${kept[@]}")
  done
  log "left out of kube-controller-manager: $SANDBOX_CP_CONTROLLERS_OFF"
fi

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

kubeconfig_path() { echo "$state/admin.kubeconfig"; }

# ---------------------------------------------------------------- processes

# pid_of COMPONENT: prints the recorded pid if that process is alive and is really our
# binary (argv[0] is the absolute path of the binary in the recorded bin dir); returns 1
# otherwise. A zombie has an empty cmdline and counts as gone.
pid_of() {
  local comp=$1 pidfile=$state/pids/$1.pid pid argv0 bin
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  bin=$(recorded_bin) || return 1
  argv0=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | head -n 1) || return 1
  [[ $argv0 == "$bin/$comp" ]] || return 1
  echo "$pid"
}

recorded_bin() { [[ -f $state/bin ]] && cat "$state/bin"; }

# describe_dead COMPONENT: why pid_of failed, for messages.
describe_dead() {
  local comp=$1 pidfile=$state/pids/$1.pid pid cmdline
  if [[ ! -f $pidfile ]]; then echo "$comp: no pid file"; return; fi
  pid=$(<"$pidfile")
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-100) || true
  if [[ -z $cmdline ]]; then
    echo "$comp: pid $pid is gone (stale pid file)"
  else
    echo "$comp: pid $pid now belongs to another program ($cmdline); not touching it"
  fi
}

# start_proc COMPONENT ARGS...: runs the component's binary in its own session, detached
# from our stdin/stdout/stderr and from every other inherited file descriptor (so that
# `$(cluster.sh up)` returns and the lock is not held), logging to logs/COMPONENT.log.
start_proc() {
  local comp=$1; shift
  local bin; bin=$(recorded_bin)
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [[ $fd =~ ^[0-9]+$ ]] && (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec </dev/null >>"$state/logs/$comp.log" 2>&1
    cd "$state"
    exec setsid "$bin/$comp" "$@"
  ) &
  local pid=$! i
  echo "$pid" >"$state/pids/$comp.pid"
  # Wait until the forked shell has become the binary (so pid_of recognises it).
  for ((i = 0; i < 100; i++)); do
    pid_of "$comp" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  pid_of "$comp" >/dev/null || {
    log "$comp did not start; last lines of $state/logs/$comp.log:"
    tail -n 25 "$state/logs/$comp.log" >&2 || true
    return 1
  }
}

# stop_procs COMPONENT...: SIGTERM to those of ours that are alive, SIGKILL after 5 s.
stop_procs() {
  local comp pid live=() i
  for comp in "$@"; do
    if pid=$(pid_of "$comp"); then
      kill -TERM "$pid" 2>/dev/null || true
      live+=("$comp")
    elif [[ -f $state/pids/$comp.pid ]]; then
      log "$(describe_dead "$comp")"
    fi
  done
  for ((i = 0; i < 50 && ${#live[@]} > 0; i++)); do
    sleep 0.1
    local still=()
    for comp in "${live[@]}"; do pid_of "$comp" >/dev/null && still+=("$comp"); done
    live=("${still[@]+"${still[@]}"}")
  done
  for comp in "${live[@]+"${live[@]}"}"; do
    if pid=$(pid_of "$comp"); then
      log "$comp (pid $pid) ignored SIGTERM for 5 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for comp in "$@"; do rm -f "$state/pids/$comp.pid"; done
}

stop_all() {
  # Clients first, then the API server, then its storage.
  stop_procs kwok kube-scheduler kube-controller-manager
  stop_procs kube-apiserver
  stop_procs etcd
}

# ---------------------------------------------------------------- API access

api() { # api PATH [curl args...]: HTTPS request to the API server as the admin user
  local path=$1; shift
  curl -sS --noproxy '*' --max-time 5 \
    --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" \
    "$@" "https://127.0.0.1:$(port APISERVER_PORT)$path"
}

port() { sed -n "s/^$1=//p" "$state/ports.env"; }

readyz_ok() { [[ -f $state/ports.env ]] && [[ $(api /readyz 2>/dev/null) == ok ]]; }

all_alive() {
  local comp
  for comp in "${components[@]}"; do pid_of "$comp" >/dev/null || return 1; done
}

healthy() { [[ -f $state/ready ]] && all_alive && readyz_ok; }

# ---------------------------------------------------------------- setup

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: polls COMMAND every 0.2 s; while waiting,
# fails at once if one of our started components died.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout)) comp
  until "$@" >/dev/null 2>&1; do
    for comp in "${components[@]}"; do
      if [[ -f $state/pids/$comp.pid ]] && ! pid_of "$comp" >/dev/null; then
        log "$comp exited while waiting for $what; last lines of $state/logs/$comp.log:"
        tail -n 25 "$state/logs/$comp.log" >&2 || true
        return 1
      fi
    done
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

etcd_ok() { [[ $(curl -sS --noproxy '*' --max-time 2 "http://127.0.0.1:$(port ETCD_CLIENT_PORT)/health") == *'"health":"true"'* ]]; }

node_ok() {
  api "/api/v1/nodes/$node_name" | python3 -c '
import json, sys
n = json.load(sys.stdin)
ready = any(c.get("type") == "Ready" and c.get("status") == "True"
            for c in n.get("status", {}).get("conditions", []))
tainted = any(t.get("key") == "node.kubernetes.io/not-ready"
              for t in n.get("spec", {}).get("taints") or [])
sys.exit(0 if ready and not tainted else 1)'
}

default_sa_ok() {
  [[ $(api /api/v1/namespaces/default/serviceaccounts/default -o /dev/null -w '%{http_code}') == 200 ]]
}

# EXIT trap of `up` while starting: a start-up that did not finish stops what it started.
on_up_exit() {
  local rc=$?
  if [[ ! -f $state/ready ]]; then
    log "start-up failed; stopping what was started (logs stay in $state/logs)"
    stop_all
  fi
  exit $((rc ? rc : 1))
}

# ---------------------------------------------------------------- commands

cmd_up() {
  exec 9>"$lockfile"
  if ! flock -n 9; then
    log "another cluster.sh holds $lockfile; waiting"
    flock 9
  fi

  local bin delay t0=$SECONDS
  delay=$(pod_start_delay_ms)
  bin=$("$here/build.sh" | tail -n 1)
  [[ -x $bin/kube-apiserver ]] || die "build.sh did not produce binaries (got '$bin')"

  if [[ -d $state ]]; then
    if [[ $(recorded_bin 2>/dev/null || true) != "$bin" ]]; then
      [[ -f $state/bin ]] && log "running control plane uses other binaries ($(recorded_bin)); restarting it"
    elif healthy || { [[ -f $state/ready ]] && all_alive && {
        # All processes run but /readyz does not answer ok: maybe just a busy API
        # server (other tests use it); give it time before declaring it broken.
        log "API server does not answer /readyz ok; waiting up to 30 s"
        wait_for "kube-apiserver /readyz" 30 readyz_ok; }; }; then
      if [[ $(cat "$state/pod-start-delay-ms" 2>/dev/null) != "$delay" ]] || ! stages_match "$delay"; then
        log "restarting kwok with a default pod start delay of ${delay} ms and the stages of kwok-stages.yaml"
        stop_procs kwok
        # The old kwok's node Lease would keep the new one from managing the node
        # (and its Pods) until the Lease expires, so remove it.
        api "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/$node_name" \
          -X DELETE -o /dev/null || true
        write_stages "$delay"
        start_kwok || die "kwok did not start again; run: $0 down && $0 up"
      else
        log "control plane already up (state $state)"
      fi
      kubeconfig_path
      return 0
    else
      local comp
      for comp in "${components[@]}"; do
        pid_of "$comp" >/dev/null || log "$(describe_dead "$comp")"
      done
      [[ -f $state/ready ]] || log "previous start-up did not finish"
      all_alive && log "API server at $state does not answer /readyz"
      log "stopping what is left of the previous control plane and starting afresh"
    fi
    stop_all
    rm -rf "$state"
  fi

  mkdir -p "$state"/{pids,logs,data,pki}
  echo "$bin" >"$state/bin"
  log "starting control plane in $state"
  t0=$SECONDS

  local ports
  read -r -a ports <<<"$(free_ports 5)"
  cat >"$state/ports.env" <<EOF
ETCD_CLIENT_PORT=${ports[0]}
ETCD_PEER_PORT=${ports[1]}
APISERVER_PORT=${ports[2]}
CONTROLLER_MANAGER_PORT=${ports[3]}
SCHEDULER_PORT=${ports[4]}
EOF

  gen_certs
  write_kubeconfig "$state/admin.kubeconfig" admin
  write_kubeconfig "$state/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "$state/kube-scheduler.kubeconfig" kube-scheduler
  write_kubeconfig "$state/kwok.kubeconfig" kwok
  write_stages "$delay"

  trap on_up_exit EXIT
  trap 'exit 130' INT TERM

  start_etcd
  wait_for "etcd /health" 30 etcd_ok
  start_apiserver
  wait_for "kube-apiserver /readyz" 90 readyz_ok
  log "kube-apiserver ready after $((SECONDS - t0))s"
  start_controller_manager
  start_scheduler
  start_kwok

  create_node
  create_storage_class
  wait_for "Node $node_name Ready without the not-ready taint" 90 node_ok
  wait_for "ServiceAccount default/default" 60 default_sa_ok
  touch "$state/ready"
  trap - EXIT INT TERM
  log "control plane up in $((SECONDS - t0))s; kubeconfig: $(kubeconfig_path)"
  kubeconfig_path
}

# component_arg NAME: NAME if it is one of ours, else a usage error.
component_arg() {
  local comp
  for comp in "${components[@]}"; do [[ $comp == "${1:-}" ]] && { echo "$comp"; return 0; }; done
  die "unknown component '${1:-}' (one of: ${components[*]})"
}

# live_pid COMPONENT: its verified pid, or a clear error (never a guess).
live_pid() {
  local pid
  [[ -f $state/ready ]] || die "no control plane is up at $state"
  pid=$(pid_of "$1") || die "$(describe_dead "$1")"
  echo "$pid"
}

cmd_restart() {
  local comp pid t0=$SECONDS
  comp=$(component_arg "${1:-}")
  exec 9>"$lockfile"
  flock 9
  pid=$(live_pid "$comp")
  # A frozen process ignores SIGTERM until it is resumed.
  kill -CONT "$pid" 2>/dev/null || true
  log "restarting $comp (pid $pid)"
  stop_procs "$comp"
  case $comp in
    etcd) start_etcd; wait_for "etcd /health" 30 etcd_ok; wait_for "kube-apiserver /readyz" 90 readyz_ok ;;
    kube-apiserver) start_apiserver; wait_for "kube-apiserver /readyz" 90 readyz_ok ;;
    kube-controller-manager) start_controller_manager ;;
    kube-scheduler) start_scheduler ;;
    kwok)
      api "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/$node_name" -X DELETE -o /dev/null || true
      start_kwok ;;
  esac
  log "$comp restarted (pid $(pid_of "$comp")) in $((SECONDS - t0))s"
}

cmd_signal() { # cmd_signal STOP|CONT COMPONENT
  local comp pid
  comp=$(component_arg "${2:-}")
  pid=$(live_pid "$comp")
  kill -"$1" "$pid"
  log "sent SIG$1 to $comp (pid $pid)"
}

cmd_down() {
  exec 9>"$lockfile"
  flock 9
  if [[ ! -d $state ]]; then
    log "nothing to stop ($state does not exist)"
    return 0
  fi
  stop_all
  rm -rf "$state"
  log "control plane stopped, $state removed"
}

cmd_kubeconfig() {
  if healthy; then
    kubeconfig_path
  else
    log "control plane is not up (state $state); run: $0 up"
    return 1
  fi
}

cmd_env() {
  local bin
  if ! bin=$(recorded_bin); then
    bin=$("$here/build.sh" | tail -n 1)
  fi
  healthy || log "warning: the control plane is not up; run: $0 up"
  printf 'export KUBECONFIG=%q\n' "$(kubeconfig_path)"
  printf 'export PATH=%q:"$PATH"\n' "$bin"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  kubeconfig) cmd_kubeconfig ;;
  restart) cmd_restart "${2:-}" ;;
  stop) cmd_signal STOP "${2:-}" ;;
  cont) cmd_signal CONT "${2:-}" ;;
  pid) component_arg "${2:-}" >/dev/null; live_pid "$2" ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
