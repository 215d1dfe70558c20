# taskstream: `make run` starts everything and the app; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APP_ADDRESS ?= 127.0.0.1
APP_PORT ?= 8501

.PHONY: run test up down status lint format unit bench

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@

## up: start (or reuse) Kafka, Elasticsearch and PostgreSQL
up: $(STAMP)
	$(PY) -m devstack up

## down: stop what devstack started
down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

status: $(STAMP)
	$(PY) -m devstack status

## run: services, the outbox relay and the indexer, and the Streamlit app on
## http://$(APP_ADDRESS):$(APP_PORT); Ctrl-C stops the app, the relay and the indexer.
run: up
	@mkdir -p .devstack/logs
	@echo "relay and indexer log to .devstack/logs/relay.log and indexer.log"
	$(PY) -m pipeline relay >> .devstack/logs/relay.log 2>&1 & relay=$$!; \
	$(PY) -m pipeline indexer >> .devstack/logs/indexer.log 2>&1 & indexer=$$!; \
	trap 'kill -TERM $$relay $$indexer 2>/dev/null; wait $$relay $$indexer' EXIT INT TERM; \
	$(PY) -m streamlit run app.py --server.address $(APP_ADDRESS) --server.port $(APP_PORT) \
		--server.headless true --browser.gatherUsageStats false

## test: services + lint + the whole test suite
test: up
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

## bench: throughput and lag-snapshot benchmarks against the running services (on demand)
bench: up
	$(PY) -m bench.pipeline_throughput
	$(PY) -m bench.lag_snapshot

unit: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .
