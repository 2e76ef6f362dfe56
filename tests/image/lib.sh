# shellcheck shell=bash
# tests/image/lib.sh: the harness of the image tests (sourced by run.sh).
#
#   check NAME FUNCTION   runs FUNCTION (in a subshell, errexit on) with its
#                         output in $logs/NAME.log,
#                         prints PASS/FAIL with the time, the log tail on a
#                         failure, and counts the result
#                         (IMAGE_TEST_ONLY="name ...": only those, the
#                         others are listed as not run)
#   summary               prints "N passed, N failed, N not run" and returns
#                         non-zero on any failure, and on any check not run
#                         unless the run was declared partial
#                         (IMAGE_TEST_PARTIAL=1 next to IMAGE_TEST_ONLY): an
#                         IMAGE_TEST_ONLY left in the environment must not
#                         turn a run of a few checks into a pass of all
#   in_image ROOTFS UID:GID [SRC:DEST]... -- COMMAND...
#                         runs COMMAND from an unpacked image root file
#                         system the way a container runtime would with the
#                         chart's securityContext: a private mount namespace,
#                         the root file system read-only, only the listed
#                         host paths bound in (read-only), chroot, the given
#                         user, an empty environment plus IMAGE_ENV (array);
#                         with IN_IMAGE_EXEC=1 it replaces the calling shell

passed=0
failed=0
failures=()
not_run=()
logs=${IMAGE_TEST_LOGS:-target/test-logs/image}
mkdir -p "$logs"

fail() { echo "FAIL: $*" >&2; return 1; }

check() {
  local name=$1 function=$2 start status
  if [[ -n ${IMAGE_TEST_ONLY:-} && " $IMAGE_TEST_ONLY " != *" $name "* ]]; then
    echo "NOT RUN $name (IMAGE_TEST_ONLY=$IMAGE_TEST_ONLY)"
    not_run+=("$name")
    return
  fi
  start=$(date +%s.%N)
  # A subshell with errexit: the first failing command ends the check.
  (set -e && "$function") >"$logs/$name.log" 2>&1
  status=$?
  local took
  took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  if ((status == 0)); then
    passed=$((passed + 1))
    echo "PASS $name (${took} s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL $name (${took} s); last lines of $logs/$name.log:"
    tail -n 40 "$logs/$name.log" | sed 's/^/    /'
  fi
}

summary() {
  ((failed == 0)) || echo "failed: ${failures[*]}"
  echo "$passed passed, $failed failed, ${#not_run[@]} not run"
  if ((${#not_run[@]} > 0)); then
    if [[ ${IMAGE_TEST_PARTIAL:-} == 1 ]]; then
      echo "PARTIAL run (IMAGE_TEST_PARTIAL=1): not run: ${not_run[*]}"
    else
      echo "FAIL: not run: ${not_run[*]} (IMAGE_TEST_ONLY=$IMAGE_TEST_ONLY); set IMAGE_TEST_PARTIAL=1 for a partial run" >&2
      return 1
    fi
  fi
  ((failed == 0))
}

IMAGE_ENV=()
in_image() {
  local root=$1 user=$2
  shift 2
  local binds=()
  while [[ $1 != -- ]]; do binds+=("$1"); shift; done
  shift
  # Mount points exist in the image's root file system, as a runtime makes them.
  local bind
  for bind in "${binds[@]}"; do
    if [[ -d ${bind%%:*} ]]; then mkdir -p "$root${bind#*:}"; else
      mkdir -p "$(dirname "$root${bind#*:}")" && touch "$root${bind#*:}"
    fi
  done
  # IN_IMAGE_EXEC=1 (in a subshell): exec, so the caller's $! is the process.
  local launcher=()
  [[ ${IN_IMAGE_EXEC:-} == 1 ]] && launcher=(exec)
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  "${launcher[@]}" unshare --mount --propagation private -- bash -c '
    set -e
    root=$1 user=$2 count=$3
    shift 3
    mount --bind "$root" "$root"
    for ((i = 0; i < count; i++)); do
      source=${1%%:*} dest=$root${1#*:}
      mount --bind "$source" "$dest"
      mount -o remount,bind,ro "$dest"
      shift
    done
    mount -o remount,bind,ro "$root"
    env_count=$1
    shift
    environment=("${@:1:env_count}")
    shift "$env_count"
    exec env -i "${environment[@]}" "$(command -v chroot)" --userspec="$user" "$root" "$@"
  ' in_image "$root" "$user" "${#binds[@]}" "${binds[@]}" "${#IMAGE_ENV[@]}" "${IMAGE_ENV[@]}" "$@"
}
