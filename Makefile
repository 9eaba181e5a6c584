# The contract with a new user: `make test` and `make bench` work on a fresh
# Debian machine as root. They install liburing-dev when its header is
# missing, create .venv, install the package with its extras, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_GET := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: test test-all test-debug test-matrix wheel test-wheel bench bench-check bench-deps lint generate deps clean

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

# A wheel for .venv's Python that needs no liburing on the user's machine:
# the sdist first, then the wheel from it (which proves the sdist builds),
# with liburing.a linked into both extensions (OURING_LIBURING=static: an
# error if the compiler finds no liburing.a); auditwheel repair gives it its
# manylinux tag; .ci/check_wheel.py checks that nothing in it needs liburing.so.
# LDSHARED without the interpreter's own link flags: a pyenv Python's carry
# an rpath to its lib directory, which the extensions (linking no libpython)
# do not need and a wheel must not ship.
# `make wheel VENV=.venv-3.13` (after test-matrix) builds the one for 3.13.
WHEEL_TAG = $(shell $(BIN)/python -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
WHEEL = dist/ouring-*-$(WHEEL_TAG)-$(WHEEL_TAG)-manylinux*.whl
WHEEL_CC = $(shell $(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("CC"))')

wheel: deps
	rm -rf dist/build dist/ouring-*-$(WHEEL_TAG)-$(WHEEL_TAG)-*.whl
	OURING_LIBURING=static LDSHARED="$(WHEEL_CC) -shared" $(BIN)/python -m build --outdir dist/build .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/auditwheel repair --wheel-dir dist dist/build/*-$(WHEEL_TAG)-*.whl
	$(BIN)/auditwheel show $(WHEEL)
	$(BIN)/python .ci/check_wheel.py $(WHEEL)

# The suite against the installed wheel, never the source tree: a fresh venv
# with the wheel and its test extras, and a copy of what the tests read
# (tests/, examples/, benchmarks/ sources, README.md, pyproject.toml for pytest's settings) in a
# directory where `import ouring` can only find site-packages. The build
# tests in tests/test_packaging.py still build from this tree.
WHEEL_TEST := build/test-wheel

test-wheel: wheel
	rm -rf $(WHEEL_TEST)
	mkdir -p $(WHEEL_TEST)
	$(BIN)/python -m venv $(WHEEL_TEST)/venv
	$(WHEEL_TEST)/venv/bin/python -m pip install -q --upgrade pip
	$(WHEEL_TEST)/venv/bin/python -m pip install -q "$$(echo $(WHEEL))[test,build]"
	cp -r tests examples docs README.md pyproject.toml $(WHEEL_TEST)/
	mkdir -p $(WHEEL_TEST)/benchmarks  # test_bench_idle runs a bench row (not results/)
	cp benchmarks/*.py benchmarks/*.c $(WHEEL_TEST)/benchmarks/
	cd $(WHEEL_TEST) && venv/bin/python -c 'import ouring; \
		assert "/site-packages/" in ouring.__file__, ouring.__file__; print("testing", ouring.__file__)'
	cd $(WHEEL_TEST) && OURING_SOURCE_TREE=$(CURDIR) venv/bin/python -m pytest -m "not slow"

# The suite again with CPython's debug allocator (catches writes past or into
# freed Python memory) and development mode (asyncio/resource warnings, faulthandler).
test-debug: deps
	PYTHONMALLOC=debug $(BIN)/python -X dev -m pytest -m "not slow" -p no:cacheprovider

test-all: deps lint
	$(BIN)/pytest

# The benchmark suite (benchmarks/run.py): files, TCP echo, server RSS with
# 10,000 idle connections, then RSS over 10 million operations. bench-check: the quick version of the rows the targets
# compare (3 repeats, echo rows 5 of 1 s; about 2 minutes), exits non-zero when ouring misses a
# must-reach ratio (run.py TARGETS) or a cell's checks fail.
bench: bench-deps
	$(BIN)/python benchmarks/run.py

bench-check: bench-deps
	$(BIN)/python benchmarks/run.py --quick --check

BENCH_STAMP := $(VENV)/.bench-installed
ECHO_CLIENT := benchmarks/results/echo_client

# ouring is installed editable: byte-compile it as pip does an installed
# package (trio's .pyc come with its install). Without this, an environment
# with PYTHONDONTWRITEBYTECODE compiles ouring's source in every server
# process: slower starts and ~5 MiB of compiler heap in the memory rows.
bench-deps: deps $(BENCH_STAMP) $(ECHO_CLIENT)
	$(BIN)/python -m compileall -q src/ouring benchmarks

# The peers (the bench extra), fio for the C-ceiling rows and wrk (the HTTP load
# generator of the static-file rows) when they can be installed (root and
# apt-get); without them those rows say "not installed". The asyncio event loops
# written in Rust (uringcore, rsloop) come from PyPI as sources only: each is
# tried on its own, its build's output kept in $(PEERS_LOG), and one that does not
# build leaves its echo rows saying so instead of failing the install.
BENCH_LOOPS := uringcore rsloop
PEERS_LOG := $(VENV)/bench-peers.log

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@: > $(PEERS_LOG)
	@for peer in $(BENCH_LOOPS); do \
		echo "== pip install $$peer" >> $(PEERS_LOG); \
		$(BIN)/python -m pip install -q $$peer >> $(PEERS_LOG) 2>&1 || \
		echo "peer $$peer not available: pip could not install it (see $(PEERS_LOG)); its rows will say so"; \
	done
	@if command -v fio >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio; } || \
		echo "fio: apt-get install failed; the fio rows will say not installed"; \
	else echo "fio is not installed (needs root and apt-get): the fio rows will say so"; fi
	@if command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk || \
		echo "wrk: apt-get install failed; the static-file rows will say not installed"; \
	else echo "wrk is not installed (needs root and apt-get): the static-file rows will say so"; fi
	touch $@

# The C load generator of the echo rows.
$(ECHO_CLIENT): benchmarks/echo_client.c
	mkdir -p $(@D)
	gcc -O2 -Wall -Wextra -o $@ $<

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python tools/gen_ops.py --check

# The public calls (ouring.x, Ring.x) of the operations that _ops.py declares
# `public = Public(...)`: rewrite _generated_api.py and _generated_ring.py.
generate: deps
	$(BIN)/python tools/gen_ops.py

deps: $(STAMP)

/usr/include/liburing.h:
	DEBIAN_FRONTEND=noninteractive $(APT_GET) update -qq
	DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq liburing-dev

# Editable install: the cffi extension is built into src/ouring/ and rebuilt
# whenever the native sources or the build configuration change.
$(STAMP): /usr/include/liburing.h pyproject.toml setup.py native/build.py native/shim.h native/shim.c native/ringcore.c native/internal.h native/lease.c native/ops.c native/core.c native/receive.c native/pool.c native/trio_await.c native/ouring_cdef.h
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,build]'
	touch $@

clean:
	rm -rf $(VENV) .venv-3.* build dist src/*.egg-info src/ouring/_native* src/ouring/_ringcore*.so
