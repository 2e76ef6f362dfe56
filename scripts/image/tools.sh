#!/usr/bin/env bash
# tools.sh [TOOL...]: makes sure the image tools (default: all below) are
# present, installing only what is missing, and prints the directory of the
# cargo-installed ones (put it on PATH). Idempotent and cheap when everything
# is there.
#
#   umoci, skopeo                 Debian packages (apt-get, as root)
#   cargo-deny, cargo-sbom        crates.io, `cargo install --locked` at the
#                                 pinned versions below, into
#                                 $SANDBOX_TOOLS_DIR (default
#                                 ~/.cache/sandbox-operator/tools), outside
#                                 the repository so a clean clone reuses them
#
# Install times are printed, so CI logs show what a new machine pays.
set -euo pipefail

CARGO_DENY_VERSION=0.20.2
CARGO_SBOM_VERSION=0.10.0
tools=${SANDBOX_TOOLS_DIR:-$HOME/.cache/sandbox-operator/tools}

say() { echo "tools.sh: $*" >&2; }
wanted=" ${*:-umoci skopeo cargo-deny cargo-sbom} "
wants() { [[ $wanted == *" $1 "* ]]; }

missing=()
for tool in umoci skopeo; do
  if wants "$tool" && ! command -v "$tool" >/dev/null; then missing+=("$tool"); fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    say "${missing[*]} missing: run as root or apt-get install -y ${missing[*]}"
    exit 2
  fi
  start=$(date +%s)
  say "installing ${missing[*]} (Debian)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  say "apt-get install ${missing[*]}: $(($(date +%s) - start)) s"
fi

# cargo_tool CRATE VERSION BINARY: installs CRATE@VERSION unless BINARY of
# that version is already in $tools/bin.
cargo_tool() {
  local crate=$1 version=$2 binary=$3
  wants "$crate" || return 0
  # A cargo plugin run directly takes its subcommand name first.
  if "$tools/bin/$binary" "${binary#cargo-}" --version 2>/dev/null | grep -qF " $version"; then
    return
  fi
  local start
  start=$(date +%s)
  say "installing $crate $version (cargo install --locked, once per machine)"
  cargo install --quiet --locked --root "$tools" "$crate@$version" >&2
  say "cargo install $crate $version: $(($(date +%s) - start)) s"
}
cargo_tool cargo-deny "$CARGO_DENY_VERSION" cargo-deny
cargo_tool cargo-sbom "$CARGO_SBOM_VERSION" cargo-sbom

echo "$tools/bin"
