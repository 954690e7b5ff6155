# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up
# first (a virtualenv with the Python package, and the browser libraries from npm).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NPM_STAMP := node_modules/.installed-stamp
PORT ?= 8000

.PHONY: setup browser demo test lint pytest bench clean

setup: $(STAMP) $(NPM_STAMP) browser

# Debian's Chromium for the UI tests (tests/test_ui.py drives it with Playwright; no browser
# download). Idempotent: nothing happens when chromium is already installed.
browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(VENV)/bin/spreadwatch demo --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check actors app tests bench
	$(VENV)/bin/mypy

pytest: setup
	$(PY) -m pytest

test: lint pytest

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
