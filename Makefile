# The README's two set-up commands are `make demo` and `make test`; both build .venv on demand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# A stamp per install flavour, so editing pyproject.toml reinstalls and nothing else does.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,mmengine,lightning,tensorboard]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/proveseg demo

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(DEV_STAMP)
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
