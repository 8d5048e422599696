# The two commands that set up a fresh machine: `make demo` and `make test`.
# Both create .venv with Python 3.11 and install the package into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= results

.PHONY: demo test lint typecheck pytest docs test-slow bench reproduce render-docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# the CPU build of torch first, so that no dependency can pull another torch
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[all,test,docs]" "torch==2.13.0"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pairloss demo --out $(OUT)

test: lint typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks mkdocs_hooks
	$(BIN)/ruff format --check src tests benchmarks mkdocs_hooks

typecheck: $(STAMP)
	$(BIN)/mypy src mkdocs_hooks

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]" "torch==2.13.0"
	$(BIN)/python -m benchmarks --out benchmarks/results

reproduce: $(STAMP)
	$(BIN)/pairloss reproduce --all --quick --out $(OUT)

# The docs tables and the README's recipes table, from the full runs committed under docs/results/.
render-docs: $(STAMP)
	$(BIN)/python -m pairloss.recipes.render

clean:
	rm -rf $(VENV) build dist site .mypy_cache .ruff_cache src/*.egg-info
