# The two commands of the README: `make run` and `make test`.
# Both work on a fresh machine with Python 3.11+ and make.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

## Serve on HOST:PORT (default 127.0.0.1:8000) on the SQLite default; prints a dev token.
run: $(VENV)/.installed-run
	$(BIN)/idstore serve

## Run the whole test suite (SQLite, and PostgreSQL when reachable).
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## ruff and mypy, as CI runs them.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Apply migrations to DATABASE_URL (default: the SQLite file).
migrate: $(VENV)/.installed-run
	$(BIN)/idstore migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

## The benchmark of docs/benchmarks.md (PostgreSQL on 127.0.0.1 by default):
##   make bench ARGS="--users 100000"    make bench ARGS="--quick"
ARGS ?=
.PHONY: bench
bench: $(VENV)/.installed-run
	$(BIN)/python -m bench.run $(ARGS)
