# The two commands of the README are `make demo` and `make test`; everything else is a step of them.
# Each target is idempotent: a second run reuses the venv, the download cache and running servers.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install up status down demo test test-fast lint bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)
	$(PY) -m deploy.stack install

up: install
	$(PY) -m deploy.stack up
	$(PY) -m deploy.stack status

status:
	$(PY) -m deploy.stack status

down:
	$(PY) -m deploy.stack down

# feature_store.yaml (generated from the settings: it holds passwords) lets `feast -c feature_repo ...` work.
demo: up
	$(PY) -m taobao_assets.feast_repo write-config
	$(PY) -m taobao_assets.cli demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collected nothing; make treats any non-zero exit as a failure.
test: up lint
	$(PY) -m pytest

# The tests that need no server (format, parser, event time, plans, generation, settings,
# definitions): under a minute, with or without the stack.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not stack and not slow" -p no:randomly

bench: up
	$(PY) -m bench
