# PromptProxy: make run (serve on SQLite), make test (the whole suite), make bench (the benchmark).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS ?= 1

.PHONY: install install-test run test lint bench bench-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

run: install
	$(BIN)/promptproxy db upgrade
	$(BIN)/promptproxy serve

lint: install-test
	$(BIN)/ruff check promptproxy tests app.py bench

test: install-test lint
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python bench/run.py

bench-quick: install-test
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
