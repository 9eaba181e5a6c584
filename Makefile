# The contract with a new user: `make test` and `make bench` work on a fresh
# Debian machine as root. They install liburing-dev when its header is
# missing, create .venv, install the package with its extras, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_GET := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: test test-all test-debug bench lint deps clean

test: deps lint
	$(BIN)/pytest -m "not slow"

# The suite again with CPython's debug allocator (catches writes past or into
# freed Python memory) and development mode (asyncio/resource warnings, faulthandler).
test-debug: deps
	PYTHONMALLOC=debug $(BIN)/python -X dev -m pytest -m "not slow" -p no:cacheprovider

test-all: deps lint
	$(BIN)/pytest

bench: deps
	$(BIN)/python benchmarks/bench_files.py

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

deps: $(STAMP)

/usr/include/liburing.h:
	DEBIAN_FRONTEND=noninteractive $(APT_GET) update -qq
	DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq liburing-dev

# Editable install: the cffi extension is built into src/ouring/ and rebuilt
# whenever the native sources or the build configuration change.
$(STAMP): /usr/include/liburing.h pyproject.toml setup.py native/build.py native/shim.h native/shim.c native/ouring_cdef.h
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info src/ouring/_native*
