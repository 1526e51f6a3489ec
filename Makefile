# recsvc: `make run` sets up and runs the whole system on demo data; `make test` sets up and runs the tests.
# Everything runs from the virtualenv in .venv, created from the pinned requirements.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= var/demo
# The env file of `make run`: created with a random ADMIN_TOKEN if missing, loaded by honcho for every process.
RUN_ENV_FILE ?= .env

.PHONY: help venv docs-assets services test test-tools lint run bench clean nestjs-client docker-checks soak audit cluster

help:
	@echo "make run    - set up and run web, worker, beat and flower on demo data (Ctrl-C stops all)"
	@echo "make test   - set up and run the test suite (lint included)"
	@echo "make lint   - ruff check and format check, and the layer contracts (lint-imports)"
	@echo "make soak   - one minute of load against gunicorn while models retrain and reload"
	@echo "make audit  - pip-audit the pinned requirements for known vulnerabilities (needs the network)"
	@echo "make bench  - run the benchmarks (figures go into docs/PERFORMANCE.md)"
	@echo "make cluster - a local Redis Cluster of three masters; prints the REDIS_URL to use (Ctrl-C stops it)"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "error: python3 (3.11 or newer) is not installed" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: $(PYTHON) is older than Python 3.11" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing the pinned requirements into $(VENV): a few minutes on a cold machine (LightFM compiles)"
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt
	touch $(STAMP)

# Swagger UI and ReDoc for /docs and /redoc, pinned and checksummed, fetched from npm (not committed).
docs-assets:
	bash app/static/fetch-docs-assets.sh

# The NestJS client (clients/nestjs): dependencies from its lockfile (again only when the lockfile changes),
# compiled with tsc; make test runs its tests against a live server (tests/clients).
nestjs-client: clients/nestjs/node_modules/.package-lock.json
	cd clients/nestjs && npx tsc -p .

clients/nestjs/node_modules/.package-lock.json: clients/nestjs/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed to build the NestJS client" >&2; exit 1; }
	cd clients/nestjs && npm ci --no-audit --no-fund

# dclint for the static checks of docker/docker-compose.yml (tests/docker), from docker/'s lockfile.
docker-checks: docker/node_modules/.package-lock.json

docker/node_modules/.package-lock.json: docker/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed to check the compose file" >&2; exit 1; }
	cd docker && npm ci --no-audit --no-fund

# wrk (load generator) and strace (to hold a training run at an exact stage) for the reliability tests and the
# serving benchmark, chromium (headless) for the docs pages' browser test, promtool (Debian's prometheus
# package) for the alert rules' checks and unit tests: installed from Debian's packages when missing and
# possible; otherwise those tests skip.
test-tools:
	@missing=""; for tool in wrk strace chromium promtool; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	packages=$$(echo "$$missing" | sed 's/promtool/prometheus/'); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing$$packages"; apt-get update -qq && apt-get install -y -qq$$packages >/dev/null; \
		else echo "note:$$missing not installed (apt-get install$$packages): the tests needing them will skip"; fi; \
	fi

# Starts local PostgreSQL and Redis if they are installed but not running; fails naming what is missing.
services: venv
	$(PY) scripts/services.py $(SERVICES_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: SERVICES_ARGS = --database-url $${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
	--redis-url $${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
# The suite runs on PYTEST_WORKERS pytest-xdist workers (0: in one process), each with its own databases
# (testing/environment.py). Its slow tests mostly wait on real processes, so two workers halve it on 2 cores.
PYTEST_WORKERS ?= 2
test: services test-tools docs-assets nestjs-client docker-checks lint
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The soak test for a whole minute (make test runs it for 15 s); it prints its figures and writes them to
# SOAK_REPORT. docs/RELIABILITY.md reports a run of this target.
soak: SERVICES_ARGS = --database-url $${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
	--redis-url $${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
soak: services
	@mkdir -p var
	SOAK_SECONDS=$${SOAK_SECONDS:-60} SOAK_REPORT=$${SOAK_REPORT:-var/soak.json} \
		$(VENV)/bin/pytest -s tests/reliability/test_soak.py $(PYTEST_ARGS)

# A throwaway local Redis Cluster (three masters, no persistence, free ports) to run recsvc on: prints
# REDIS_URL=redis+cluster://... and runs until Ctrl-C, then stops its nodes and removes their files
# (docs/OPERATIONS.md, "Running on a Redis Cluster"). Needs redis-server and redis-cli 7 or newer.
cluster: venv
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || \
		{ echo "error: redis-server and redis-cli are needed (apt-get install redis-server)" >&2; exit 1; }
	$(PY) -m testing.cluster

# Known vulnerabilities of the pinned runtime requirements. Needs PyPI's vulnerability API (network), so it
# is not part of `make test`; --strict fails when a dependency could not be audited instead of passing.
audit: venv
	$(VENV)/bin/pip-audit --strict --progress-spinner off -r requirements.txt

# The figures of docs/PERFORMANCE.md's training, retrain and serving tables (the serving benchmark needs wrk:
# apt-get install wrk).
# Scratch databases of their own on the local server; BENCH_DATABASE_URL and BENCH_REDIS_URL move them.
BENCH_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/recsvc_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/2
bench: SERVICES_ARGS = --database-url $(BENCH_DATABASE_URL) --redis-url $(BENCH_REDIS_URL)
bench: services test-tools docs-assets
	$(PY) -m benchmarks.train --size both --database-url $(BENCH_DATABASE_URL)
	$(PY) -m benchmarks.retrain --sizes default,large --database-url $(BENCH_DATABASE_URL) --redis-url $(BENCH_REDIS_URL)
	$(PY) -m benchmarks.serve
	$(PY) -m benchmarks.page_cost
	$(PY) -m benchmarks.page_split

# The whole system on demo data: database and schema, demo data if the database has no interactions, then
# web, worker, beat and flower under honcho. Beat's line first makes sure a model is served (the Procfile).
run: SERVICES_ARGS = --create-database
run: services docs-assets
	@mkdir -p var
	@test -f $(RUN_ENV_FILE) || { \
		echo "ADMIN_TOKEN=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(32))')" > $(RUN_ENV_FILE) \
		&& echo "created $(RUN_ENV_FILE) with a random ADMIN_TOKEN (admin endpoints); see .env.example for the rest"; }
	$(PY) -m ml.db init
	@if $(PY) -m ml.db count | awk '$$1 == "interactions" && $$2 == 0 { empty = 1 } END { exit !empty }'; then \
		echo "the database has no interactions: loading demo data"; \
		$(PY) -m ml.demo --out $(DEMO_DIR) && $(PY) -m ml.db load $(DEMO_DIR); \
	fi
	@$(PY) scripts/urls.py $(RUN_ENV_FILE)
# Ctrl-C: honcho stops every process and exits with 130, which make would report as "Error 130". The shell's
# trap keeps it alive to take that status as success; make itself then ends by the signal, silently.
	@trap : INT; $(VENV)/bin/honcho start --env $(RUN_ENV_FILE) || [ $$? -eq 130 ]

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
