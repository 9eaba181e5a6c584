# The contract with a new user: `make test` and `make bench` work on a fresh
# Debian machine as root. They install liburing-dev when its header is
# missing, create .venv, install the package with its extras, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_GET := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: test test-all test-debug test-matrix bench bench-check bench-deps lint deps clean

test: deps lint
	$(BIN)/pytest -m "not slow"

# The suite on every CPython 3.11+ on the machine that .ci/pythons finds
# (pyenv's, python3.1x on PATH; one per minor version), each in its own
# .venv-X.Y made by `make deps` with that VENV and PYTHON: the package
# installed editable and its extensions built by that interpreter. Lint runs
# once; mypy once more per version, for the branches on sys.version_info.
test-matrix: SHELL := /bin/bash
test-matrix: lint
	@pythons=$$(.ci/pythons); \
	if [ -z "$$pythons" ]; then echo "test-matrix: no CPython 3.11+ found" >&2; exit 1; fi; \
	failed=(); \
	while read -r version python <&3; do \
		echo "== Python $$version: $$python"; \
		{ $(MAKE) --no-print-directory deps VENV=.venv-$$version PYTHON="$$python" && \
		  $(BIN)/mypy --python-version "$$version" && \
		  .venv-$$version/bin/pytest -m "not slow"; } || failed+=("$$version"); \
	done 3<<< "$$pythons"; \
	if [ $${#failed[@]} -gt 0 ]; then echo "test-matrix: FAILED on $${failed[*]}" >&2; exit 1; fi; \
	echo "test-matrix: passed on" $$(cut -d' ' -f1 <<< "$$pythons")

# The suite again with CPython's debug allocator (catches writes past or into
# freed Python memory) and development mode (asyncio/resource warnings, faulthandler).
test-debug: deps
	PYTHONMALLOC=debug $(BIN)/python -X dev -m pytest -m "not slow" -p no:cacheprovider

test-all: deps lint
	$(BIN)/pytest

# The benchmark suite (benchmarks/run.py): files, TCP echo, then RSS over 10
# million operations. bench-check: the quick version of the rows the targets
# compare (3 repeats, about 40 seconds), exits non-zero when ouring misses a
# must-reach ratio (run.py TARGETS) or a cell's checks fail.
bench: bench-deps
	$(BIN)/python benchmarks/run.py

bench-check: bench-deps
	$(BIN)/python benchmarks/run.py --quick --check

BENCH_STAMP := $(VENV)/.bench-installed
ECHO_CLIENT := benchmarks/results/echo_client

bench-deps: deps $(BENCH_STAMP) $(ECHO_CLIENT)

# The peers (the bench extra), and fio for the C-ceiling rows when it can be
# installed (root and apt-get); without it those rows say "not installed".
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@if command -v fio >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio; } || \
		echo "fio: apt-get install failed; the fio rows will say not installed"; \
	else echo "fio is not installed (needs root and apt-get): the fio rows will say so"; fi
	touch $@

# The C load generator of the echo rows.
$(ECHO_CLIENT): benchmarks/echo_client.c
	mkdir -p $(@D)
	gcc -O2 -Wall -Wextra -o $@ $<

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
$(STAMP): /usr/include/liburing.h pyproject.toml setup.py native/build.py native/shim.h native/shim.c native/hot.c native/ouring_cdef.h
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,build]'
	touch $@

clean:
	rm -rf $(VENV) .venv-3.* build src/*.egg-info src/ouring/_native* src/ouring/_hot*.so
