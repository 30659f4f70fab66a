# nmm-chaos: `make run` and `make test` are all a newcomer needs. Both create
# .venv and `pip install -e .` (which builds the cffi extension, libnmm.so/.a,
# libnmm_preload.so and harness/_native/nmm-driver), re-installing whenever a
# source or pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Anything that changes what `pip install -e .` produces.
BUILD_INPUTS := pyproject.toml setup.py allocator/build.py \
	$(wildcard allocator/src/*.c allocator/src/*.h allocator/include/*.h \
	           harness/native/*.c harness/native/*.h)

.PHONY: help run demo test lint native bench coverage clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# pip's log (and setuptools' editable-install banner) goes to $(INSTALL_LOG) and is
# shown only when the install fails: `make run` and `make test` print their own output.
INSTALL_LOG := $(VENV)/install.log

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	-@$(PIP) install --quiet --upgrade pip >/dev/null 2>&1

$(STAMP): $(VENV)/bin/python $(BUILD_INPUTS)
	@echo "pip install -e '.[test,dev]' (builds the native code; log in $(INSTALL_LOG))"
	@$(PIP) install -e '.[test,dev]' >$(INSTALL_LOG) 2>&1 || { \
	    cat $(INSTALL_LOG); echo "make: pip install failed; its log is above and in $(INSTALL_LOG)" >&2; \
	    exit 1; }
	@touch $@

run: $(STAMP) ## set up, run the smoke campaign (NMM levels x installed peers), print its HTML report's path
	$(VENV)/bin/nmm-chaos campaign chaos_plans/campaigns/smoke.toml

demo: $(STAMP) ## a short workload through the Python binding, printing the heap's stats
	$(PY) -m allocator demo

test: lint ## set up, lint and type-check, then run every test (pytest -n auto)
	$(PY) -m pytest -n auto tests/

lint: $(STAMP) ## ruff check and mypy --strict (part of `make test`)
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/mypy

native: $(STAMP) ## (re)build libnmm.so/.a, libnmm_preload.so and nmm-driver
	$(PY) allocator/build.py native

BENCH_ARGS ?=
# where `make bench` writes bench-<timestamp>/ (its bench.md gets the controlled-scheduler table)
BENCH_OUT ?= reports
bench: $(STAMP) ## benchmark NMM side by side with glibc and installed peers, and the chaos build's controlled scheduler against free-running (BENCH_ARGS="--repeat 5 ...")
	$(VENV)/bin/nmm-chaos bench --out $(BENCH_OUT) $(BENCH_ARGS)
	$(PY) -m harness.chaos_goals throughput --bench-dir "$$(ls -td $(BENCH_OUT)/bench-* | head -1)"

# Which seeds of the nightly campaign the coverage run takes (its own: 50 per plan).
NIGHTLY_SEEDS ?= 4

coverage: $(STAMP) ## line+branch coverage of allocator/src by the smoke and nightly plans alone (gcov)
	$(PY) -m harness.coverage --nightly-seeds $(NIGHTLY_SEEDS)

clean: ## remove the venv and every build output
	rm -rf $(VENV) build allocator/_native harness/_native allocator/_nmm_cffi.* \
	       allocator/_nmm_chaos_cffi.* *.egg-info .pytest_cache .hypothesis \
	       .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
