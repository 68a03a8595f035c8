# keel — `make run` on a fresh machine sets everything up and runs the local stack.
# Every target installs what it needs first (apt packages, Kafka jars, the .venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help deps venv run up down status test unit integration chaos lint bench bench-profile clean

help:
	@echo "make run    set up and run the whole local stack with a demo feed (Ctrl-C stops it)"
	@echo "           KEEL_CDC=debezium make run: the departments' databases through Debezium in Kafka Connect"
	@echo "make up     start the stack in the background (no demo feed); returns once ready"
	@echo "make status every process of the stack (make run's or make up's) with its health answer"
	@echo "make down   stop whatever runs, started by 'make run' or 'make up'"
	@echo "make test   set up and run the whole test suite"
	@echo "make chaos  the fault suite at 4x the size make test runs it (kills, outages, poison)"
	@echo "make lint   ruff + mypy + import contracts (lint-imports)"
	@echo "make bench  throughput, freshness, query latency, recovery at two scales (bench/results/)"
	@echo "make bench-profile  py-spy on a worker on the backlog, then live, in a run of its own"

# The runtime packages only for run/up; the test toolchain (pytest, mypy, ruff, selenium, …)
# on top for test/lint. pip's output goes to .venv/pip.log (its tail is shown if it fails).
TEST_STAMP := $(VENV)/.test-installed
PIP := $(VENV)/bin/pip install --disable-pip-version-check --quiet

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "keel: $(PYTHON) not found: install Python >= 3.11"; exit 2; }
	@echo "keel: installing the runtime packages into $(VENV) (first run only, about a minute)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) -e . > $(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; echo "keel: pip failed (all of it: $(VENV)/pip.log)"; exit 1; }
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	@echo "keel: installing the test toolchain into $(VENV) (first run only)"
	@$(PIP) -e '.[test]' >> $(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; echo "keel: pip failed (all of it: $(VENV)/pip.log)"; exit 1; }
	@touch $(TEST_STAMP)

venv: $(STAMP)

# apt packages (redis-server, postgresql, prometheus) and the Kafka, Kafka Connect and Debezium
# jars (Maven Central, cached in ~/.cache/keel), each only if missing.
deps: venv
	@$(PY) -m deploy.local fetch

run: deps
	@$(PY) -m deploy.local.run

up: deps
	@$(PY) -m deploy.local.run --background

down:
	@if [ -x $(PY) ]; then $(PY) -m deploy.local.run --down; else $(PYTHON) -m deploy.local.run --down; fi

status:
	@$(PY) -m deploy.local.run --status

test: deps $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(TEST_STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: deps $(TEST_STAMP)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# The fault suite (broker and worker kills, a whole-cluster outage, Redis and PostgreSQL
# outages, poison and 10,000 malformed records, failover of one of two workers, a rolling
# restart) at 4x the customers `make test` runs it with; each test prints its figures.
CHAOS_SCALE ?= 4
chaos: deps $(TEST_STAMP)
	CHAOS_SCALE=$(CHAOS_SCALE) $(PY) -m pytest -s tests/integration/test_cluster.py tests/integration/test_faults.py \
		tests/integration/test_store_outages.py tests/integration/test_malformed.py \
		tests/integration/test_failover.py $(PYTEST_ARGS)

# Benchmarks on the real local stack (own broker, own worker; < 25 min on 2 cores): one run
# at 1,000,000 events / 100,000 customers (the reference), one at 200,000 / 20,000;
# bench/results/<run>.json + .png each, <run>-scales.json (growth with customers) and tables.
# BENCH_ARGS=--quick for a run of seconds, BENCH_ARGS="--events N --customers M" for one scale.
BENCH_ARGS ?=
$(VENV)/.bench-installed: $(STAMP)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet -e '.[test,bench]'
	@touch $@

bench: deps $(VENV)/.bench-installed
	$(PY) -m bench $(BENCH_ARGS)

# A sampling profile (py-spy --native, every thread) of a worker on the same backlog, in a run
# of its own: py-spy pauses the worker at every sample, so it is never attached while
# `make bench` measures. bench/results/<run>-profile.json + the raw stacks; idle waits apart.
bench-profile: deps $(VENV)/.bench-installed
	$(PY) -m bench --profile $(BENCH_ARGS)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check streams connectors deploy tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
