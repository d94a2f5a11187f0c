# Every target installs what it needs into .venv on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp

NODES ?= 1
SECURITY ?=
DEMO_EVENTS ?= 200
ONCE ?=
PYTEST_ARGS ?=

help: ## Show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres]'  # postgres: the idempotency store's tests
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

run-pipeline: $(STAMP) ## Run the example pipelines on a real broker with live progress (ONCE=1 DEMO_EVENTS=500)
	$(BIN)/pipeline demo --events $(DEMO_EVENTS) $(if $(ONCE),--once,)

test: $(STAMP) ## Run every test (unit + integration against a real Kafka broker)
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## Run the unit tests only (no broker)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# Python 3.12 beside the main 3.11 venv: CI runs the unit and contract suites on it too.
PY312_VENV := .venv-py312
PY312_STAMP := $(PY312_VENV)/.installed-stamp

$(PY312_STAMP): pyproject.toml
	@test -x $(PY312_VENV)/bin/python || "$$(bash .ci/python312.sh)" -m venv $(PY312_VENV)
	$(PY312_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PY312_VENV)/bin/python -m pip install --quiet -e '.[dev,postgres]'
	@touch $(PY312_STAMP)

test-py312: $(PY312_STAMP) ## Unit and contract suites on Python 3.12 (its own venv, .venv-py312)
	$(PY312_VENV)/bin/pytest tests/unit tests/contract $(PYTEST_ARGS)

lint: $(STAMP) ## Ruff (style, imports, complexity)
	$(BIN)/ruff check pipeline stages tests chaos bench

typecheck: $(STAMP) ## mypy --strict on the framework
	$(BIN)/mypy

all: lint typecheck test ## Lint, typecheck and test

kafka-up: $(STAMP) ## Start the local Kafka broker (NODES=3 for a 3-node cluster, SECURITY=sasl_ssl for TLS + SCRAM)
	$(PY) -m pipeline.localkafka up --nodes $(NODES) $(if $(SECURITY),--security $(SECURITY),)

kafka-down: $(STAMP) ## Stop the local Kafka broker
	$(PY) -m pipeline.localkafka down

kafka-logs: $(STAMP) ## Show the tail of the local broker's log
	$(PY) -m pipeline.localkafka logs

clean: ## Remove the virtualenv and caches (keeps the broker's jars)
	rm -rf $(VENV) $(PY312_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

.PHONY: help install run-pipeline test test-unit test-py312 lint typecheck all kafka-up kafka-down kafka-logs clean

# -- benchmark: OURS vs a hand-written loop and peer frameworks (see bench/README.md) ----------
MESSAGES ?= 200000
ROUNDS ?= 3
BENCH_ARGS ?=
PEERS_VENV := bench/.venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp

# Peers live in their own venv, never in the project's. A peer that fails to install is
# reported as "not run" by the benchmark rather than failing it.
$(PEERS_STAMP): bench/requirements-peers.txt
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/requirements-peers.txt \
		|| echo "bench: some peers did not install; they will be reported as not run"
	@touch $(PEERS_STAMP)

bench: $(STAMP) $(PEERS_STAMP) ## Benchmark vs raw confluent-kafka and peers (MESSAGES=200000 ROUNDS=3; quick: MESSAGES=20000 ROUNDS=1)
	$(PY) -m bench.run --messages $(MESSAGES) --rounds $(ROUNDS) $(BENCH_ARGS)

.PHONY: bench

bench-delays: $(STAMP) ## Due-time lateness of delayed events on the broker (EVENTS=3000 RATE=150 WORKERS=1)
	$(PY) -m bench.delays --events $(or $(EVENTS),3000) --rate $(or $(RATE),150) --workers $(or $(WORKERS),1)
.PHONY: bench-delays

# -- chaos: kill -9, SIGTERM, scaling and a broker restart under load (see chaos/__init__.py) ---
EVENTS ?= 100000
KILLS ?= 20
SEED ?=
CHAOS_ARGS ?=

chaos: $(STAMP) ## Chaos run: kills/SIGTERMs/scaling/broker restart under load; 0 lost, 0 duplicate effects (EVENTS=100000 KILLS=20 SEED=)
	$(PY) -m chaos.runner --events $(EVENTS) --kills $(KILLS) --nodes $(NODES) $(if $(SEED),--seed $(SEED),) $(CHAOS_ARGS)

.PHONY: chaos

# -- containerized Kafka: an image built here, no registry needed (see docker/kafka/build.sh) --
# The integration tests that matter most: delivery, crash and redelivery, retries and the DLQ,
# exactly-once. They run on a testcontainers broker from the image (tests/brokers.py).
DOCKER_TESTS ?= tests/integration/test_delivery.py tests/integration/test_crash_and_shutdown.py \
	tests/integration/test_retries.py tests/integration/test_failures.py \
	tests/integration/test_exactly_once.py

kafka-image: $(STAMP) ## Build the Kafka 4.4 image from Debian + the Maven jars (cached; needs a Docker engine, root once)
	PY=$(PY) bash docker/kafka/build.sh >/dev/null

test-docker: $(STAMP) ## Run the key integration tests on a broker in Docker, from make kafka-image's image
	image="$$(PY=$(PY) bash docker/kafka/build.sh)" && \
	PIPELINE_TEST_BROKER=docker PIPELINE_KAFKA_IMAGE="$$image" TESTCONTAINERS_RYUK_DISABLED=true \
		$(BIN)/pytest $(DOCKER_TESTS) $(PYTEST_ARGS)

.PHONY: kafka-image test-docker
