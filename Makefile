# The two commands of the README are `make demo` and `make test`; everything else is a step of them.
# Each target is idempotent: a second run reuses the venv, the download cache and running servers.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The compiled parser core (Rust, PyO3): rebuilt when its sources change; cargo keeps its build
# cache in parser_core/target, so a rebuild compiles only what changed.
CORE_STAMP   := $(VENV)/.parser-core
CORE_SOURCES := $(wildcard parser_core/Cargo.* parser_core/pyproject.toml parser_core/*.pyi parser_core/src/*.rs)

.PHONY: install up status down demo test test-fast test-core lint bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(CORE_STAMP): $(STAMP) $(CORE_SOURCES)
	@command -v cargo >/dev/null || { echo "make: cannot build the parser core: Rust's cargo is not on PATH (install it with https://rustup.rs, then run make again)"; exit 1; }
	$(PY) -m pip install -q ./parser_core
	touch $(CORE_STAMP)

install: $(CORE_STAMP)
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

lint: $(CORE_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	cd parser_core && cargo fmt --check

# The core's own Rust unit tests (text of the messages); the differential tests against the Python
# reference are in the pytest suite.
test-core: $(CORE_STAMP)
	cd parser_core && PYO3_PYTHON=$(CURDIR)/$(PY) cargo test -q

# pytest exits 5 when it collected nothing; make treats any non-zero exit as a failure.
test: up lint test-core
	$(PY) -m pytest

# The tests that need no server (format, parser, event time, plans, generation, settings,
# definitions): under a minute, with or without the stack.
test-fast: $(CORE_STAMP)
	$(PY) -m pytest -m "not stack and not slow" -p no:randomly

bench: up
	$(PY) -m bench
