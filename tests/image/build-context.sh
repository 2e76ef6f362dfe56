#!/usr/bin/env bash
# tests/image/build-context.sh DEPINFO [DOCKERFILE [DOCKERIGNORE]]: fails,
# naming the file, when an input of the release build is missing from what
# `docker build` would give it: not copied by a COPY of the Dockerfile's
# build stage, or excluded from the build context by .dockerignore. No
# container engine needed.
#
# The inputs: every file under the workspace that the release build's
# dep-info (DEPINFO, e.g. target/release/sandbox-operator.d) names (the
# sources, and files pulled in by include_str!/include_bytes! from anywhere
# in the repository), plus what cargo reads to load the workspace (Cargo.lock,
# each member's Cargo.toml and its lib/bin source). Files under the target
# directory (build script output) and outside the workspace (crates.io
# sources, the standard library) are not in the context and not checked.
#
# .dockerignore is read as Docker reads it: patterns relative to the context
# root (no leading-slash or basename matching), `*` and `?` within one path
# segment, `**` across segments, a pattern that matches a parent directory
# matches the files under it, `!` re-includes, and the last matching line
# wins. COPY sources are plain paths or globs; `COPY --from=...` lines copy
# from another stage and do not count.
set -euo pipefail
depinfo=${1:?usage: build-context.sh DEPINFO [DOCKERFILE [DOCKERIGNORE]]}
cd "$(dirname "$0")/../.."
dockerfile=${2:-Dockerfile}
dockerignore=${3:-.dockerignore}
[[ -s $depinfo ]] || { echo "build-context: no dep-info at $depinfo (run the release build first)" >&2; exit 2; }

metadata=$(cargo metadata --no-deps --format-version 1 --locked)
root=$(jq -er .workspace_root <<<"$metadata")
target_dir=$(jq -er .target_directory <<<"$metadata")

# The inputs, as paths relative to the workspace root.
inputs=()
add_input() {
  local path=$1
  [[ $path == /* ]] || path=$root/$path
  [[ $path == "$target_dir"/* ]] && return
  [[ $path == "$root"/* ]] || return 0
  inputs+=("${path#"$root"/}")
}
# Dep-info: "OUTPUT: DEP DEP ...", a space inside a path escaped as "\ ".
line=$(head -n 1 "$depinfo")
deps=${line#*: }
deps=${deps//\\ /$'\x1f'}
read -ra words <<<"$deps"
for word in "${words[@]}"; do add_input "${word//$'\x1f'/ }"; done
((${#inputs[@]} > 0)) || { echo "build-context: $depinfo names no file of the workspace" >&2; exit 2; }
add_input Cargo.lock
while IFS= read -r path; do add_input "$path"; done < <(jq -r '.packages[] |
  .manifest_path, (.targets[] | select(.kind | any(. == "lib" or . == "bin" or . == "proc-macro")) | .src_path)' <<<"$metadata")

# COPY sources of the stages that copy from the context.
sources=()
while read -r instruction rest; do
  [[ ${instruction^^} == COPY ]] || continue
  read -ra arguments <<<"$rest"
  [[ " ${arguments[*]} " == *" --from="* ]] && continue
  local_sources=()
  for argument in "${arguments[@]}"; do [[ $argument == --* ]] || local_sources+=("$argument"); done
  unset 'local_sources[-1]' # the destination
  for source in "${local_sources[@]}"; do
    source=${source#./}
    source=${source%/}
    sources+=("${source:-.}")
  done
done <"$dockerfile"

copied() {
  local path=$1 source
  for source in "${sources[@]}"; do
    [[ $source == . ]] && return 0
    # shellcheck disable=SC2053 # the source is a glob on purpose
    [[ $path == $source || $path == $source/* ]] && return 0
  done
  return 1
}

# .dockerignore patterns as anchored regular expressions.
glob_regex() {
  local glob=$1 regex= i char
  for ((i = 0; i < ${#glob}; i++)); do
    char=${glob:i:1}
    case $char in
    '*')
      if [[ ${glob:i:3} == '**/' ]]; then regex+='(.*/)?' && i=$((i + 2))
      elif [[ ${glob:i:2} == '**' ]]; then regex+='.*' && i=$((i + 1))
      else regex+='[^/]*'; fi
      ;;
    '?') regex+='[^/]' ;;
    '\') i=$((i + 1)) && regex+="\\${glob:i:1}" ;;
    '.' | '+' | '^' | '$' | '(' | ')' | '{' | '}' | '|') regex+="\\$char" ;;
    *) regex+=$char ;;
    esac
  done
  echo "^$regex\$"
}
patterns=() regexes=()
if [[ -f $dockerignore ]]; then
  while IFS= read -r pattern || [[ -n $pattern ]]; do
    pattern=${pattern%$'\r'}
    [[ $pattern == '#'* ]] && continue
    # Docker trims each line (a "charts/ " with a trailing space still
    # excludes charts/; found by the second read).
    pattern=${pattern#"${pattern%%[![:space:]]*}"}
    pattern=${pattern%"${pattern##*[![:space:]]}"}
    [[ -z $pattern ]] && continue
    body=${pattern#!}
    while [[ $body == /* ]]; do body=${body#/}; done
    while [[ $body == */ ]]; do body=${body%/}; done
    body=${body#./}
    patterns+=("$pattern")
    regexes+=("$(glob_regex "$body")")
  done <"$dockerignore"
fi

# The pattern that decides PATH's fate, when it is excluded.
excluded_by() {
  local path=$1 i prefix decision=
  local prefixes=() rest=$path
  while :; do
    prefixes+=("$rest")
    [[ $rest == */* ]] || break
    rest=${rest%/*}
  done
  for i in "${!regexes[@]}"; do
    for prefix in "${prefixes[@]}"; do
      if [[ $prefix =~ ${regexes[i]} ]]; then
        if [[ ${patterns[i]} == '!'* ]]; then decision=; else decision=${patterns[i]}; fi
        break
      fi
    done
  done
  [[ -n $decision ]] && echo "$decision"
}

mapfile -t inputs < <(printf '%s\n' "${inputs[@]}" | sort -u)
missing=0
for path in "${inputs[@]}"; do
  if ! copied "$path"; then
    echo "build-context: $path is an input of the release build, but no COPY of $dockerfile copies it" >&2
    missing=$((missing + 1))
  fi
  if pattern=$(excluded_by "$path"); then
    echo "build-context: $path is an input of the release build, but $dockerignore excludes it ($pattern)" >&2
    missing=$((missing + 1))
  fi
done
count=${#inputs[@]}
((missing == 0)) || { echo "build-context: $missing problem(s) among $count inputs: the Dockerfile build would fail" >&2; exit 1; }
echo "build-context: all $count inputs of the release build are copied by $dockerfile and kept by $dockerignore"
