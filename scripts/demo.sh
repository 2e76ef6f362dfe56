#!/usr/bin/env bash
# `make demo`: a scripted tour that exits on its own. Claims on a warm pool,
# then claims that go cold, a table of launch type and claim-to-Ready
# latency, then clean-up (the end-to-end bench in demo mode).
set -euo pipefail
cd "$(dirname "$0")/.."
kubeconfig=$(tests/controlplane/cluster.sh up | tail -n 1)
SANDBOX_KUBECONFIG=$kubeconfig cargo bench --bench claim-latency -- --demo
