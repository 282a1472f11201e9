# The two commands a new user needs: `make run` (set up, then run the main job) and `make test`.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup run test check lint typecheck pytest bench bench-50k screenshot image clean clean-cache soak
# pytest-xdist workers: two per core (at most 8), each with its own control plane, Prometheus and
# ports; most of a test's time is waiting on cycles, rollouts and scrapes, not computing (the
# suite's processes use about a third of two cores with two workers: README, Development).
PYTEST_WORKERS ?= $(shell n=$$(( $$(nproc 2>/dev/null || echo 1) * 2 )); [ $$n -gt 8 ] && n=8; echo $$n)

setup:
	@bash scripts/setup

# On a real node where one can run (root on Linux with what setup installs), else on kwok's.
run: setup
	@if $(PY) -m rainbowd_sandbox.node --check >/dev/null; then \
	  echo "make run: root on Linux with the node's parts: the sandbox on a real node"; \
	  $(PY) -m rainbowd sandbox --node --story; \
	else \
	  echo "make run: $$($(PY) -m rainbowd_sandbox.node --check); the sandbox on kwok's fake node"; \
	  $(PY) -m rainbowd sandbox --story; \
	fi

test: setup check pytest

check: lint typecheck

lint:
	ruff check rainbowd sandbox demo_app tests scripts
	ruff format --check rainbowd sandbox demo_app tests scripts
	lint-imports

typecheck:
	mypy

# The real node's tests run on one worker (tests/conftest.py, pytest_xdist_make_scheduler); the
# run ends with the 15 slowest tests and the time per folder.
pytest:
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15

# BENCH: which benchmarks (e.g. BENCH="planner cycle"; all when empty). With BASE=<git ref>:
# the same benchmarks on BASE and on this tree, alternating rounds, medians side by side.
bench: setup
	$(PY) -m tests.bench $(if $(BASE),compare --against $(BASE)) $(BENCH)

# The scale benchmark at 50,000 Deployments (about 20 minutes): docs/bench/scale-50000.json.
# 3-cycle windows; the polling baseline gets 5 minutes to stamp everything, and is recorded as
# incomplete if it does not.
bench-50k: setup
	RAINBOWD_BENCH_SCALE=50000 RAINBOWD_BENCH_CYCLES=3 RAINBOWD_BENCH_WITHIN=1200 \
	  RAINBOWD_BENCH_BASELINE_WITHIN=300 $(PY) -m tests.bench scale

# docs/rainbow-page.png: the live page during the sandbox's story, in headless Chromium.
screenshot: setup
	$(PY) -m tests.screenshot

# rainbowd's image (and the node's pause image) as OCI archives in the build cache, no registry.
image: setup
	$(PY) -m rainbowd_sandbox.images

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The per-user build cache (binaries, Go's caches, tools, images, wheels): see README, Development.
clean-cache:
	@dir=$$(PYTHONPATH=sandbox python3 -m rainbowd_sandbox.buildcache root) && \
	  echo "removing $$dir" && chmod -R u+w "$$dir" 2>/dev/null; rm -rf "$$dir"

# The compressed long life (docs: README "Soak"): 30 minutes of 0.2 s cycles, churn and faults
# against the real control plane and Prometheus; figures printed, exit 1 on a wrongful action.
soak: setup
	$(PY) -m tests.soak --minutes $${SOAK_MINUTES:-30}
