# The two commands a new user needs: `make run` (set up, then run the main job) and `make test`.
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup run test check lint typecheck pytest bench clean

setup:
	@bash scripts/setup

run: setup
	$(PY) -m rainbowd sandbox --story

test: setup check pytest

check: lint typecheck

lint:
	ruff check rainbowd demo_app tests
	ruff format --check rainbowd demo_app tests

typecheck:
	mypy

pytest:
	$(PY) -m pytest

bench: setup
	$(PY) -m tests.bench

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis
