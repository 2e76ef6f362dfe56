#!/usr/bin/env bash
# Installs the host packages the tests need, once: Debian's `prometheus` package, for
# `promtool` (rule and metric checks) and a `prometheus` binary that tests start on
# their own 127.0.0.1 port. The package's own service must not keep running: starts
# are denied during the install with a policy-rc.d, and if a service started anyway
# (e.g. under systemd) it is stopped and disabled.
#
# Idempotent: does nothing but print versions when `promtool` is already installed.
# Needs root (or passwordless sudo) only when it has something to install.
set -euo pipefail

log() { printf '[setup-host] %s\n' "$*" >&2; }

if command -v promtool >/dev/null 2>&1; then
  log "promtool already installed: $(command -v promtool)"
else
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo -n)
    else
      log "not root and no sudo: install Debian's 'prometheus' package by hand"
      exit 1
    fi
  fi

  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    # Exit status 101 = "action forbidden": invoke-rc.d starts no service.
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 0755 "$policy"
    created_policy=1
  else
    log "$policy already exists; leaving it as it is"
  fi
  cleanup() { if [[ $created_policy == 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi; }
  trap cleanup EXIT

  export DEBIAN_FRONTEND=noninteractive
  log "apt-get update"
  "${sudo[@]}" apt-get update -qq >&2
  log "apt-get install prometheus (for promtool)"
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    prometheus >&2

  cleanup
  trap - EXIT

  # Belt and braces: if a Prometheus service started anyway, stop and disable it.
  if command -v systemctl >/dev/null 2>&1; then
    if [[ -d /run/systemd/system ]]; then
      "${sudo[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    else
      # No running systemd (container): removes the boot-time enablement only.
      "${sudo[@]}" systemctl disable prometheus.service >/dev/null 2>&1 || true
    fi
  fi
  if [[ -x /etc/init.d/prometheus ]]; then
    "${sudo[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    if command -v update-rc.d >/dev/null 2>&1; then
      "${sudo[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
  fi
fi

promtool --version 2>&1 | head -n 1
if command -v prometheus >/dev/null 2>&1; then
  prometheus --version 2>&1 | head -n 1
fi
