# PromptProxy: make run (serve on SQLite), make test (the whole suite), make bench (the benchmark).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS ?= 1

.PHONY: install install-test lock run test lint audit agents oidc bench bench-quick bench-floor clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Dependencies come from hash-pinned lock files (a tampered or substituted package fails to install);
# the project itself is installed without resolving anything. `make lock` regenerates them.
install: $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements-test.lock
	$(BIN)/pip install -q --no-deps -e .

lock:
	$(PY) -m venv /tmp/pp-lock-venv && /tmp/pp-lock-venv/bin/pip install -q pip-tools==7.6.2
	/tmp/pp-lock-venv/bin/pip-compile -q --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras \
		--allow-unsafe -o requirements.lock pyproject.toml
	/tmp/pp-lock-venv/bin/pip-compile -q --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras \
		--allow-unsafe --extra test -o requirements-test.lock pyproject.toml

run: install
	$(BIN)/promptproxy db upgrade
	$(BIN)/promptproxy serve

lint: install-test
	$(BIN)/ruff check promptproxy tests app.py bench
	$(BIN)/bandit -q -c pyproject.toml -r promptproxy

test: install-test lint
	$(BIN)/python -m pytest

# The pinned agent CLIs (Codex, Claude Code) that tests/e2e drives through the gateway; `make test` skips those
# tests without them. The native binaries come from the npm registry as optional platform packages.
agents:
	npm ci --prefix tests/e2e/agents --no-audit --no-fund --loglevel=error
	tests/e2e/agents/node_modules/.bin/codex --version
	tests/e2e/agents/node_modules/.bin/claude --version

# The pinned OpenID Provider (npm `oidc-provider`) that tests/admin/test_sso.py starts on 127.0.0.1 and signs in to
# through Chromium; `make test` skips those tests without it (CI installs it and requires them).
oidc:
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

# Known vulnerabilities in the locked dependencies (PyPI's advisory data); CI runs it, `make test` does not.
# pip-audit lives in its own venv so the project's stays exactly the lock file.
audit:
	test -x .venv-audit/bin/pip-audit || ($(PY) -m venv .venv-audit && .venv-audit/bin/pip install -q pip-audit==2.10.1)
	.venv-audit/bin/pip-audit --vulnerability-service pypi --require-hashes --disable-pip -r requirements-test.lock

bench: install-test
	$(BIN)/python bench/run.py

bench-quick: install-test
	$(BIN)/python bench/run.py --quick

# CPU per request of waitress alone, + Flask, + one upstream call: what the stack costs before gateway logic.
bench-floor: install-test
	$(BIN)/python bench/floor.py

clean:
	rm -rf $(VENV) .venv-audit .pytest_cache .ruff_cache tests/e2e/agents/node_modules
