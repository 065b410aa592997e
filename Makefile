# Factor Engine — quick start: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install services demo test lint typecheck pytest bench parity clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/factor-engine demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# PostgreSQL and Redis for the store and service tests: started (installed on a new machine) when down
services:
	.ci/services

pytest: $(STAMP) services
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) bench/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
