# The two commands of the README: `make run` and `make test`.
# Both work on a fresh machine with Python 3.11+ and make.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint migrate clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Dependencies come from the lock files (exact versions, `make lock`);
# pyproject.toml keeps the ranges the package accepts.
$(VENV)/.installed-run: pyproject.toml requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements-dev.txt -e '.[dev]'
	touch $@ $(VENV)/.installed-run

## Serve on HOST:PORT (default 127.0.0.1:8000) on the SQLite default; prints a dev token.
run: $(VENV)/.installed-run
	$(BIN)/idstore serve

## Run the whole test suite (SQLite, and PostgreSQL when reachable), on
## PYTEST_WORKERS processes (pytest-xdist; 1 runs it in this process).
PYTEST_WORKERS ?= 2
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(if $(filter 1,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS)) $(PYTEST_ARGS)

## ruff and mypy, as CI runs them.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Apply migrations to DATABASE_URL (default: the SQLite file).
migrate: $(VENV)/.installed-run
	$(BIN)/idstore migrate

## Refresh the lock files: the newest versions pyproject.toml's ranges allow,
## for every platform, Python 3.11 (uv pip compile). Commit both files.
UV_VERSION ?= 0.13.9
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--custom-compile-command "make lock"
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV_COMPILE) --upgrade --extra dev -o requirements-dev.txt
	$(UV_COMPILE) -c requirements-dev.txt -o requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

## The benchmark of docs/benchmarks.md (PostgreSQL on 127.0.0.1 by default):
##   make bench ARGS="--users 100000"    make bench ARGS="--quick"
ARGS ?=
.PHONY: bench
bench: $(VENV)/.installed-run
	$(BIN)/python -m bench.run $(ARGS)
