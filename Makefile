# taskstream: `make run` starts everything and the app; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test up down status lint format unit bench chromium e2e screenshots

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
## http://127.0.0.1:8501 (APP_ADDRESS, APP_PORT); Ctrl-C stops the app, the relay and the indexer.
run: up
	@mkdir -p .devstack/logs
	@echo "relay and indexer log to .devstack/logs/relay.log and indexer.log"
	$(PY) -m pipeline relay >> .devstack/logs/relay.log 2>&1 & relay=$$!; \
	$(PY) -m pipeline indexer >> .devstack/logs/indexer.log 2>&1 & indexer=$$!; \
	trap 'kill -TERM $$relay $$indexer 2>/dev/null; wait $$relay $$indexer' EXIT INT TERM; \
	$(PY) -m pipeline.serve

## chromium: Debian's chromium for the browser tests (apt-get, only when /usr/bin/chromium is missing)
chromium:
	@bash tests/e2e/install_chromium.sh

## test: services + lint + the whole test suite (the browser tests need Debian's chromium)
test: up chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -m "not broker_faults"
	@# The tests that stop brokers need three of them (they fail saying so on fewer).
	@if [ "$${DEVSTACK_KAFKA_BROKERS:-3}" -ge 3 ]; then $(PY) -m pytest -m broker_faults; \
	else echo "make test: the broker-fault tests need three brokers, DEVSTACK_KAFKA_BROKERS=$$DEVSTACK_KAFKA_BROKERS: not run"; fi

## bench: throughput, lag-snapshot and replay-rate benchmarks against the running services (on demand)
bench: up
	$(PY) -m bench.pipeline_throughput
	$(PY) -m bench.lag_snapshot
	$(PY) -m bench.replay_rate

## e2e: the app in a real browser (Debian's chromium driven by Playwright); screenshots in
## tests/e2e/artifacts/
e2e: up chromium
	$(PY) -m pytest tests/e2e

## screenshots: run the browser tests and refresh the README's page screenshots in docs/screenshots/
## (all but the README check, which a page new since the last refresh would fail)
screenshots: up chromium
	$(PY) -m pytest tests/e2e -k "not readme"
	$(PY) tests/e2e/screenshots.py

unit: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .
