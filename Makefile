# Attest: `make run` (demo on http://127.0.0.1:5000) and `make test`. Everything a target needs, it installs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ATTEST := $(BIN)/attest
PG_TEST_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: run test test-sqlite test-postgres bench lint fmt install install-test system-test-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test system-test-deps

# Browser tests drive Debian's Chromium (Playwright's own browser download does not work offline);
# PDF evidence needs Pango for WeasyPrint.
system-test-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
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
	  if $(ATTEST) --help | grep -q '^  sandbox'; then $(ATTEST) sandbox serve & fi; \
	  if $(ATTEST) --help | grep -q '^  scheduler'; then $(ATTEST) scheduler & fi; \
	  $(ATTEST) serve --host 127.0.0.1 --port 5000

# ATTEST_TEST_DATABASE_URL=postgresql://... runs every test on PostgreSQL instead of SQLite.
test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-sqlite: install-test
	env -u ATTEST_TEST_DATABASE_URL $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: install-test
	ATTEST_TEST_DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install-test
	$(BIN)/ruff check .

fmt: install-test
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
