# The two commands of the README: `make run` and `make test`. Both create .venv when it is missing
# and install what they need; installs rerun only when a requirements file changes.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
TEST_DATA_DIR ?= $(CURDIR)/.mutt/test

.PHONY: run test lint typecheck typecheck-update format check-migrations venv clean

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; sys.exit("MUTT needs Python 3.11 (found %d.%d)" % sys.version_info[:2]) if sys.version_info[:2] != (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-dev

## Bring the whole system up on this machine (embedded PostgreSQL/Redis unless the URLs are set).
run: $(VENV)/.installed-run
	$(PY) manage.py mutt up

## Run the test suite (embedded services unless DATABASE_URL/REDIS_URL are set).
test: $(VENV)/.installed-dev
	MUTT_DATA_DIR="$${MUTT_DATA_DIR:-$(TEST_DATA_DIR)}" $(PY) -m pytest $(PYTEST_ARGS)

## ruff, and the import layers of docs/adr/ADR-010-layers.md (contracts in pyproject.toml).
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## mypy against mypy-baseline.txt: fails on a new error and on a baseline entry that no longer occurs.
typecheck: $(VENV)/.installed-dev
	$(PY) scripts/mypy_check.py

## Rewrite mypy-baseline.txt after fixing errors (it only shrinks; review the diff).
typecheck-update: $(VENV)/.installed-dev
	$(PY) scripts/mypy_check.py --update

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check-migrations: $(VENV)/.installed-dev
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py check

.PHONY: bench bench-smoke bench-compare

## Measure every pipeline stage (embedded services unless the URLs are set): prints a table and writes
## benchmarks/results.json; about 15 minutes on 2 cores. Pass options with BENCH_ARGS="--stages alerter --runs 3".
bench: $(VENV)/.installed-run
	$(PY) -m benchmarks $(BENCH_ARGS)

## The same harness at tiny sizes in under a minute (CI): fails if a figure is missing or an event is lost.
bench-smoke: $(VENV)/.installed-run
	$(PY) -m benchmarks --smoke $(BENCH_ARGS)

## This tree (uncommitted changes included) against a git revision, both run in turns in the same
## window, since this machine's speed drifts: make bench-compare REV=main BENCH_ARGS="--stages alerter".
bench-compare: $(VENV)/.installed-run
	@test -n "$(REV)" || { echo "usage: make bench-compare REV=<git revision> [BENCH_ARGS=...]"; exit 2; }
	$(PY) -m benchmarks --compare $(REV) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .grimp_cache .import_linter_cache
