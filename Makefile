# Attest: `make run` (demo on http://127.0.0.1:5000) and `make test`. Everything a target needs, it installs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ATTEST := $(BIN)/attest
PG_TEST_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
UV := $(BIN)/uv

.PHONY: run test test-fast test-sqlite test-postgres bench lint fmt install install-test system-test-deps lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs come from the lock files under requirements/ (every package pinned; `make lock` writes them
# from pyproject.toml): demo.lock for `make run` (the app and the sandbox services), test.lock for the
# tests. The project itself is installed after them with its dependencies, which adds only what
# pyproject.toml lists and the lock does not pin yet (a dependency added before `make lock` ran).
$(VENV)/.installed: requirements/demo.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/demo.lock
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.installed-test: requirements/test.lock pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements/test.lock
	$(BIN)/pip install --quiet -e '.[demo,test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test system-test-deps

# Browser tests drive Debian's Chromium (Playwright's own browser download does not work offline);
# PDF evidence needs Pango for WeasyPrint; the compose stack's test (tests/test_compose_stack.py) runs
# deploy/Caddyfile with Debian's Caddy. One apt-get call for whatever is missing, none when nothing is.
system-test-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v caddy >/dev/null 2>&1 || missing="$$missing caddy"; \
	ldconfig -p 2>/dev/null | grep -q libpango-1.0 || missing="$$missing libpango-1.0-0 libpangoft2-1.0-0"; \
	fc-list 2>/dev/null | grep -qi dejavu || missing="$$missing fonts-dejavu-core"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "warning: could not install$$missing (tests that need them will fail)"; \
	fi

run: install
	$(ATTEST) db upgrade
	$(ATTEST) demo
	@echo "Starting the scheduler and the web UI on http://127.0.0.1:5000 (Ctrl-C stops both)"
	@trap 'kill 0' EXIT INT TERM; \
	  $(ATTEST) sandbox serve & \
	  $(ATTEST) scheduler & \
	  $(ATTEST) serve --host 127.0.0.1 --port 5000

# ATTEST_TEST_DATABASE_URL=postgresql://... runs every test on PostgreSQL instead of SQLite.
# the suite runs on every core (pytest-xdist); each worker has its own databases (tests/conftest.py)
PYTEST_ARGS ?= -n auto
test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the quick loop while working: everything but the tests marked slow (whole-app sweeps, sandbox syncs) and
# the browser tests; `make test` runs them all
test-fast: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow and not browser"

test-sqlite: install-test
	env -u ATTEST_TEST_DATABASE_URL $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: install-test
	ATTEST_TEST_DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python -m bench $(BENCH_ARGS)

# ruff, then the layers: the import contracts in pyproject.toml ([tool.importlinter]; tests/test_layers.py
# runs them too, so `make test` and CI fail on an import that crosses a layer)
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

fmt: install-test
	$(BIN)/ruff format .

# Write the lock files from pyproject.toml for Python 3.11 on Linux, keeping every pin that still fits:
# base.lock (a production install, no sandbox), demo.lock (+ the demo extra), test.lock (+ the test extra).
# Each is constrained by the one before it, so all three agree on the versions they share.
# LOCK_ARGS=--upgrade moves everything to the newest versions, LOCK_ARGS='--upgrade-package NAME' one.
LOCK_COMPILE = $(UV) pip compile --quiet --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command 'make lock' $(LOCK_ARGS) pyproject.toml
lock: | $(BIN)/python
	$(BIN)/pip install --quiet 'uv>=0.5,<1'
	@mkdir -p requirements
	$(LOCK_COMPILE) -o requirements/base.lock
	$(LOCK_COMPILE) --extra demo -c requirements/base.lock -o requirements/demo.lock
	$(LOCK_COMPILE) --extra demo --extra test -c requirements/demo.lock -o requirements/test.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
