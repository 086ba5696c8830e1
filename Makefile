# voice-pipeline: the two front-door commands are `make run` and `make test`.
# Everything slow (compiled wheels, models, cluster binaries) is cached under $(VP_HOME), keyed by
# version, so only the first run on a machine pays for it.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export VP_HOME ?= $(HOME)/.cache/voice-pipeline
WHEELS := $(VP_HOME)/wheels
LLAMA_VERSION := 0.3.36
LLAMA_WHEEL_STAMP := $(WHEELS)/.llama-cpp-python-$(LLAMA_VERSION)
DEBIAN_PACKAGES := espeak-ng sox libopus0 redis-server prometheus etcd-server openssl unzip
INSTALL_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
MODELS_STAMP := $(VP_HOME)/models/.default-set-verified
PYTEST_ARGS ?=

.PHONY: help install deps-debian venv models run test test-unit test-integration lint typecheck format clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

install: deps-debian $(INSTALL_STAMP) models ## everything `run` and `test` need (idempotent)

deps-debian: ## Debian packages (when root; otherwise checks and says what is missing)
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo ">> apt-get install$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null || exit 1; \
	  else echo "missing Debian packages:$$missing (run as root or: sudo apt-get install$$missing)"; exit 1; fi; fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# llama-cpp-python ships only as an sdist: compile it once (~4 min on 2 cores) and keep the wheel.
$(LLAMA_WHEEL_STAMP): | $(VENV)/bin/python
	@mkdir -p $(WHEELS)
	@echo ">> compiling llama-cpp-python $(LLAMA_VERSION) once into $(WHEELS) (a few minutes)"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) wheel -q --no-deps llama-cpp-python==$(LLAMA_VERSION) -w $(WHEELS)
	@touch $@

$(INSTALL_STAMP): pyproject.toml $(LLAMA_WHEEL_STAMP) | $(VENV)/bin/python
	@echo ">> installing voice-pipeline and its Python dependencies into $(VENV)"
	$(PIP) install -q --find-links $(WHEELS) -e ".[services,sensevoice,operator,dev]"
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(INSTALL_STAMP) ## the virtualenv with all extras

models: $(INSTALL_STAMP) ## assemble and verify the offline models (cached in $VP_HOME/models)
	$(VENV)/bin/voice-pipeline models install

run: install ## start the whole pipeline in one process (gateway :8000 + all stages + local LLM)
	$(VENV)/bin/voice-pipeline serve

lint: $(INSTALL_STAMP) ## ruff (lint + format check)
	$(VENV)/bin/ruff check services operator tests
	$(VENV)/bin/ruff format --check services operator tests

typecheck: $(INSTALL_STAMP) ## mypy --strict on both packages
	$(VENV)/bin/mypy

format: $(INSTALL_STAMP) ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix services operator tests
	$(VENV)/bin/ruff format services operator tests

test-unit: $(INSTALL_STAMP) bench-deps ## unit tests only (no network, no models; the report tests draw charts: the bench extra)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

test-integration: install ## real models and real processes on loopback
	$(PY) -m pytest tests/integration -q $(PYTEST_ARGS)

# The running-Pods tier needs a Docker engine and the images: started/built here, and an engine this
# target started is stopped again at the end (VP_E2E_REQUIRE_PODS: that tier may not skip).
test: install lint typecheck test-prereqs ## everything: lint, types, unit, integration, e2e incl. running Pods (installs what it needs)
	@engine=$$(bash scripts/docker-engine.sh ensure) || exit 1; \
	stop() { if [ "$$engine" = started ]; then bash scripts/docker-engine.sh stop; fi; }; \
	$(MAKE) --no-print-directory images || { stop; exit 1; }; \
	VP_E2E_REQUIRE_PODS=1 $(PY) -m pytest tests -q -ra $(PYTEST_ARGS); rc=$$?; stop; \
	[ $$rc -eq 5 ] && { echo "no tests ran"; exit 1; }; exit $$rc

clean: ## remove the virtualenv and caches inside the repo (not $VP_HOME)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

-include mk/*.mk

# Fragments in mk/ add their prerequisites of `make test` here (e.g. cluster binaries, helm).
test-prereqs::
	@true
