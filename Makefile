# The two commands a new user needs: `make run` (set up, then run the main job) and `make test`.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup run test check lint typecheck pytest bench screenshot image clean

setup:
	@bash scripts/setup

run: setup
	$(PY) -m rainbowd sandbox --story

test: setup check pytest

check: lint typecheck

lint:
	ruff check rainbowd demo_app tests scripts
	ruff format --check rainbowd demo_app tests scripts
	lint-imports

typecheck:
	mypy

pytest:
	$(PY) -m pytest

bench: setup
	$(PY) -m tests.bench

# docs/rainbow-page.png: the live page during the sandbox's story, in headless Chromium.
screenshot: setup
	$(PY) -m tests.screenshot

# rainbowd's image (and the node's pause image) as OCI archives under .cache/images, no registry.
image: setup
	$(PY) -m rainbowd.sandbox.images

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis
