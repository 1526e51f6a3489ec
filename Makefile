# recsvc: `make run` sets up and runs the whole system on demo data; `make test` sets up and runs the tests.
# Everything runs from the virtualenv in .venv, created from the pinned requirements.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR := var/demo

.PHONY: help venv docs-assets services test lint run bench clean

help:
	@echo "make run    - set up and run web, worker, beat and flower on demo data (Ctrl-C stops all)"
	@echo "make test   - set up and run the test suite (lint included)"
	@echo "make lint   - ruff check and format check"
	@echo "make bench  - run the benchmarks (figures go into the README)"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "error: python3 (3.11 or newer) is not installed" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: $(PYTHON) is older than Python 3.11" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Swagger UI and ReDoc for /docs and /redoc, pinned and checksummed, fetched from npm (not committed).
docs-assets:
	bash app/static/fetch-docs-assets.sh

# Starts local PostgreSQL and Redis if they are installed but not running; fails naming what is missing.
services: venv
	$(PY) scripts/services.py $(SERVICES_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: SERVICES_ARGS = --database-url $${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
	--redis-url $${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
test: services docs-assets lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
