# sandbox-operator: the commands of the README. `make help` lists them.
SHELL := /bin/bash
# Every recipe line fails on its first failing command, a failing stage of a
# pipe (`$(CLUSTER) up | tail -n 1`) or an unset variable.
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
CLUSTER := tests/controlplane/cluster.sh
CRD_FILE := charts/sandbox-operator/crds/crds.yaml
CARGO ?= cargo
# Starts (or reuses) the local control plane and sets `kubeconfig` to the
# file `up` printed last; fails the recipe when `up` failed or printed no
# existing file, so that no command runs with an empty SANDBOX_KUBECONFIG.
CLUSTER_UP = kubeconfig=$$($(CLUSTER) up | tail -n 1) && \
  { [ -n "$$kubeconfig" ] && [ -f "$$kubeconfig" ] || { echo "make: \`$(CLUSTER) up\` printed no kubeconfig file (last line: '$$kubeconfig')" >&2; exit 1; }; }

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: cluster
cluster: ## Start (or reuse) the local control plane; last line: the kubeconfig path
	@$(CLUSTER) up

.PHONY: cluster-env
cluster-env: ## Print `export KUBECONFIG=...` and `export PATH=...` for the local control plane
	@$(CLUSTER) env

.PHONY: cluster-down
cluster-down: ## Stop the local control plane (only its own processes) and remove its state
	@$(CLUSTER) down

.PHONY: build
build: ## Build the operator (debug)
	$(CARGO) build --workspace --all-targets

.PHONY: crds
crds: ## Regenerate the CRD YAML in the chart from the Rust types
	@mkdir -p $(dir $(CRD_FILE))
	$(CARGO) run -q --bin sandbox-operator -- crd > $(CRD_FILE)

.PHONY: crds-check
crds-check: ## Fail when the committed CRD YAML differs from the generated one
	@mkdir -p target
	@$(CARGO) run -q --bin sandbox-operator -- crd > target/crds.generated.yaml
	@diff -q $(CRD_FILE) target/crds.generated.yaml >/dev/null || { echo "CRD drift: $(CRD_FILE) differs from \`sandbox-operator crd\`; run \`make crds\` and commit" >&2; diff -u $(CRD_FILE) target/crds.generated.yaml | head -40 >&2; exit 1; }
	@echo "CRDs: no drift"

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: test
test: ## Run every check and test (starts the local control plane if needed)
	@$(MAKE) -s lint
	@$(MAKE) -s crds-check
	@$(CLUSTER_UP) && \
	  SANDBOX_KUBECONFIG=$$kubeconfig $(CARGO) test --workspace --lib --bins --tests -- --test-threads=$${TEST_THREADS:-3}
	@$(CARGO) test --workspace --doc
	@$(MAKE) -s test-python

.PHONY: run
run: ## Run the operator on the local control plane with a demo warm pool (Ctrl-C stops all)
	@scripts/run-local.sh

.PHONY: demo
demo: ## Scripted tour: warm and cold claims with their latency, then clean up
	@scripts/demo.sh

.PHONY: bench
bench: ## End-to-end claim latency bench (pool 100, 300 warm, 30 cold, bursts) + admission microbench
	@$(CLUSTER_UP) && SANDBOX_KUBECONFIG=$$kubeconfig $(CARGO) bench --bench claim-latency
	$(CARGO) bench --bench admission

.PHONY: bench-quick
bench-quick: ## Quick end-to-end bench (pool 20, 200 warm, 20 cold, bursts of 20 and 60): about two minutes, plus the LTO build (about 9 min from an empty target)
	@$(CLUSTER_UP) && SANDBOX_KUBECONFIG=$$kubeconfig $(CARGO) bench --bench claim-latency -- --quick

.PHONY: soak
soak: ## Soak (not in CI): claims created+deleted at SOAK_RATE/s (5) for SOAK_MINUTES (10); RSS, CPU, latency per minute, leaks
	@$(CLUSTER_UP) && SANDBOX_KUBECONFIG=$$kubeconfig $(CARGO) bench --bench soak

PYTHON ?= python3
# The Python client's test venv (dependencies only matter: tests import this
# checkout's clients/python/src through PYTHONPATH). Kept under ~/.cache, keyed
# by pyproject.toml, so clean clones on the same machine reuse it; created
# when absent (about 75 s from PyPI).
PY_VENV ?= $(HOME)/.cache/sandbox-operator/python-venv-$(shell sha256sum clients/python/pyproject.toml | cut -c1-12)

$(PY_VENV)/.installed:
	$(PYTHON) -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install -q -e 'clients/python[async,test]'
	@touch $@

.PHONY: test-python
test-python: $(PY_VENV)/.installed ## Python client: ruff, mypy --strict, pytest against the local control plane and the operator
	@$(CARGO) build -q --bin sandbox-operator
	cd clients/python && $(PY_VENV)/bin/ruff check . && $(PY_VENV)/bin/ruff format --check . && $(PY_VENV)/bin/mypy src tests
	@$(CLUSTER_UP) && \
	  SANDBOX_KUBECONFIG=$$kubeconfig PYTHONPATH=$(CURDIR)/clients/python/src $(PY_VENV)/bin/pytest clients/python

.PHONY: image
image: ## Container image without a container engine: OCI layout, docker tarball and SBOM in target/image/
	@scripts/image/build.sh

.PHONY: image-test
image-test: ## Image tests (root): reproducible digest, contents, runs from its rootfs (a warm claim), cargo deny
	@$(CLUSTER_UP) && SANDBOX_KUBECONFIG=$$kubeconfig tests/image/run.sh

.PHONY: bench-pool
bench-pool: ## Warm pool sizing: the model and Erlang B vs simulation, then advised / half / autoscaled pools under Poisson claims (about 8 minutes)
	@$(CLUSTER_UP) && SANDBOX_KUBECONFIG=$$kubeconfig $(CARGO) bench --bench pool-sizing
