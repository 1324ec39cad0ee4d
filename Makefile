# The project's verbs. `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
SPARK_STAMP := $(VENV)/.installed-spark
SAIL_VENV := .venv-sail
SAIL_STAMP := $(SAIL_VENV)/.installed
SAIL_PACKAGES := pysail==0.7.2 pyspark-client==4.2.0
DATA_DIR ?= .cqrs
API_PORT ?= 8000
UI_PORT ?= 3000

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint typecheck pytest bench bench-tools clean servers-install browser-install sail-install postgres-install

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The spark extra (Spark Connect client, dagster-pyspark) for the Spark engine's tests.
$(SPARK_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,spark]'
	touch $(SPARK_STAMP)

# The Sail Spark Connect server (Rust) in its own venv: it refuses to start beside pyspark 4.3,
# so it gets pyspark-client 4.2.0. The Spark tests and `cqrs up --engine spark` start it from here.
$(SAIL_STAMP):
	test -x $(SAIL_VENV)/bin/python || $(PYTHON) -m venv $(SAIL_VENV)
	$(SAIL_VENV)/bin/pip install --disable-pip-version-check -q $(SAIL_PACKAGES)
	touch $(SAIL_STAMP)

sail-install: $(SAIL_STAMP)

# The bench extra (the peer, plots, profilers) only for `make bench`: `make test` never needs it.
$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,bench]'
	touch $(BENCH_STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

servers-install: node_modules/.installed

# Debian's Chromium for the UI test (driven by Playwright with executable_path; no browser download).
browser-install:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

# PostgreSQL (Debian) for the production-instance tests (cqrs_dagster_tests/deploy): they run
# initdb/pg_ctl themselves on 127.0.0.1 and a free port, as the postgres user when root.
postgres-install:
	@{ command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; }

run: $(STAMP)
	$(BIN)/cqrs up --data-dir $(DATA_DIR) --api-port $(API_PORT) --ui-port $(UI_PORT)

lint: $(STAMP)
	$(BIN)/ruff check cqrs_dagster cqrs_dagster_tests cqrs_bench
	$(BIN)/ruff format --check cqrs_dagster cqrs_dagster_tests cqrs_bench
	$(BIN)/lint-imports --no-logo

typecheck: $(STAMP) $(SPARK_STAMP)
	$(BIN)/mypy cqrs_dagster

# The test session starts (and stops) the local servers it needs itself: see cqrs_dagster_tests/servers/.
pytest: $(STAMP) $(SPARK_STAMP) $(SAIL_STAMP) servers-install browser-install postgres-install
	$(BIN)/pytest -p no:cacheprovider -n 2 --dist loadfile --durations=25

test: lint typecheck pytest

# Quick sizes by default (a few minutes); BENCH_FULL=1 for the sizes the targets are stated for.
# Writes bench/results/ and the table in BENCHMARKS.md. The harness's own tests (cqrs_bench/tests)
# run first; a failure stops the bench.
# wrk (Debian) drives the HTTP write-side benchmark: C, so the load generator costs little CPU.
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

bench: $(BENCH_STAMP) servers-install bench-tools
	$(BIN)/pytest -q -p no:cacheprovider cqrs_bench/tests
	$(BIN)/python -m cqrs_bench
	$(BIN)/python -m cqrs_bench.summary

clean:
	rm -rf $(VENV) $(SAIL_VENV) node_modules .cqrs .pytest_cache .mypy_cache .ruff_cache
