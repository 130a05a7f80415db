# The two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := lock/requirements.lock
SHELL  := /bin/bash

.PHONY: setup lock test-latest models browser docker kafka image demo test test-fast test-infra docs lint typecheck bench clean

setup: $(STAMP) models

# Installs come from the lock (lock/requirements.lock: every package of the export, dev and bench extras, pinned
# with hashes); pyproject.toml keeps ranges for those who install embedstream as a library. The venv's pip installs
# uv (locked in lock/bootstrap.lock), uv syncs the venv to exactly the lock, then embedstream itself goes in
# editable, without dependencies (they are all in the lock).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r lock/bootstrap.lock
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolves the lock files from pyproject.toml's ranges and lock/requirements.in, keeping every pin that still
# fits (`make lock UPGRADE=1`: the newest versions the ranges admit, what `make test-latest` has just tested).
# lock/runtime.lock (the package without extras, for the container image) is the same versions, a subset.
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes $(if $(UPGRADE),--upgrade)
lock: $(STAMP)
	$(UV_COMPILE) pyproject.toml lock/requirements.in --extra export --extra dev --extra bench \
		--override lock/overrides.txt -o $(LOCK)
	$(UV_COMPILE) pyproject.toml -c $(LOCK) -o lock/runtime.lock
	$(UV_COMPILE) lock/bootstrap.in -c $(LOCK) -o lock/bootstrap.lock

# Drift is caught here, not by users: a separate venv with the newest versions pyproject.toml's ranges admit today,
# running the quick tests plus the smoke tests (a real `ingest --mode drain` and a `serve --ingest` start). Run it
# before refreshing the lock (`make lock UPGRADE=1`) and whenever a dependency has released. A few minutes.
LATEST := build/venv-latest
test-latest: $(STAMP) models
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(BIN)/uv pip install --quiet --python $(LATEST)/bin/python --refresh --upgrade --resolution highest \
		--override lock/overrides.txt -e '.[export,dev,bench]' -r lock/requirements.in
	@echo "newest versions that differ from the lock:"
	@comm -13 <(sed -n 's/^\([A-Za-z0-9_.-]*==[^ ;]*\).*/\1/p' $(LOCK) | tr 'A-Z_' 'a-z-' | sort) \
		<($(BIN)/uv pip freeze --python $(LATEST)/bin/python --exclude-editable | tr 'A-Z_' 'a-z-' | sort)
	$(LATEST)/bin/python -m pytest -m "unit or smoke" -q -p no:cacheprovider

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

# Apache Kafka 4.4 and Beam's Flink runner for the tests: their jars from Maven Central into ~/.cache/embedstream
# (~55 MB and ~140 MB, once; Java 17 and Maven come with the machine). The tests start the broker and Flink.
kafka: $(STAMP)
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
		echo "the tests start Apache Kafka and Flink: install Java 17+ and Maven (apt-get install openjdk-17-jre-headless maven)" >&2; exit 1; }
	$(BIN)/python -c 'from tests.apache_kafka import kafka_libs; print("Apache Kafka jars in", kafka_libs())'
	$(BIN)/python -c 'from tests.flink_job_server import job_server_jar; print("Beam Flink job server:", job_server_jar())'

test: setup browser docker kafka lint typecheck
	$(BIN)/python -m pytest

# The tests marked `unit` (no broker, model build, store on disk, CLI process or browser), plus the smoke tests:
# one real `ingest --mode drain` from the CLI and one `serve --ingest` start, so a broken dependency shows at once.
test-fast: setup
	$(BIN)/python -m pytest -m "unit or smoke" -q

# infra/ alone: validators, the image built and run, compose.ci.yaml, the Dataflow template (~4 min).
test-infra: setup docker
	$(BIN)/python -m pytest -m infra -q

# The settings reference in docs/configuration.md, made from the settings models (tests/test_docs.py checks it).
docs: $(STAMP)
	$(BIN)/python -m embedstream.workers.docs_reference docs/configuration.md

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
	$(BIN)/python -m bench.versions
	$(BIN)/python -m bench.kafka_read

clean:
	rm -rf .embedstream .pytest_cache .mypy_cache .ruff_cache
