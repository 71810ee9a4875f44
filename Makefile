# cryptovol: local workflow. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
# libs/devtools (local broker, stack runner, fake exchange) is for developers only: no service
# depends on it, so no image installs it
PACKAGES := libs/core libs/runtime libs/devtools services/ingest services/featurizer services/consumer services/api training
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
STAMP := $(VENV)/.installed
TOOLS_STAMP := $(HOME)/.cache/cryptovol/.tools-installed
PYTEST_ARGS ?=

export PATH := $(CURDIR)/$(VENV)/bin:$(HOME)/.cache/cryptovol/bin:$(PATH)

.PHONY: help install run test test-unit test-integration test-deploy bench train lint lock clean \
	ledger chaos soak

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: $(STAMP) $(TOOLS_STAMP) ## create .venv, install every package, fetch the Kafka broker and deploy tools (idempotent)

$(STAMP): $(PYPROJECTS) constraints.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@# the shared library was one distribution, `cryptovol`, before it was split by purpose
	@$(UV) pip uninstall --quiet --python $(PY) cryptovol 2>/dev/null || true
	$(UV) pip install --quiet --python $(PY) --constraint constraints.txt \
		-r requirements-dev.txt $(addprefix -e ,$(PACKAGES))
	@touch $@

$(TOOLS_STAMP): $(STAMP) tools/install-deploy-tools.sh tools/install-crds.sh tools/apt-install.sh
	$(VENV)/bin/cryptovol-broker fetch
	bash tools/install-deploy-tools.sh
	@mkdir -p $(dir $@) && touch $@

run: install ## run the whole pipeline locally (broker, services, API); Ctrl-C stops everything
	$(VENV)/bin/cryptovol-stack

test: install ## lint, then unit, integration and deploy tests
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-deploy: install
	$(PY) -m pytest tests/deploy $(PYTEST_ARGS)

bench: install ## run every benchmark; results as JSON in bench/results/
	$(PY) bench/run_all.py

ledger: install ## account for every record of the running stack, ticks.raw to predictions, per product
	$(VENV)/bin/cryptovol-ledger --wait-s 30 --json .state/ledger.json

chaos: install ## SIGKILL every service, the broker, stall the exchange, under load; then the ledger
	$(VENV)/bin/cryptovol-chaos --out .state/chaos.json

soak: install ## 40 min at 20x the live rate: memory, descriptors, threads, lag, latency, verdict
	$(VENV)/bin/cryptovol-soak --minutes $(or $(SOAK_MINUTES),40)

train: install ## train and evaluate the models, log to MLflow, write models/artifacts/
	$(VENV)/bin/cryptovol-train

lint: install ## ruff and hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint --config .hadolint.yaml Dockerfile tools/images/*.Containerfile k8s/bare/images/*.Containerfile tests/e2e/*.Containerfile

lock: ## pin the tested environment: write constraints.txt from .venv
	$(UV) pip freeze --python $(PY) --exclude-editable | grep -v '^cryptovol' > constraints.txt

clean: ## remove local state (broker data, MLflow store, generated data); keeps .venv
	rm -rf .state logs data/processed data/spool data/raw bench/.scratch

-include k8s/Makefile.k8s
