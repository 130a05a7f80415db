#!/usr/bin/env bash
# Builds an embedstream image whose build needs no network: the wheels (this project and every dependency) and
# the ONNX encoders are made here, on the host, into build/image/, which is the Docker build context.
#
# usage: infra/docker/build.sh [runtime|beam] [TAG]
#   runtime (default): infra/docker/Dockerfile, base image $BASE_IMAGE (default python:3.11-slim)
#   beam:              infra/docker/Dockerfile.beam, base image $BEAM_SDK_IMAGE (default apache/beam_python3.11_sdk at
#                      the apache-beam version lock/runtime.lock pins: the launcher and the workers must agree)
# environment:
#   PYTHON   the Python whose pip builds the wheels and whose embedstream exports the models
#            (default .venv/bin/python, made by `make setup`; it must be the image's Python version)
#   MODELS   catalog encoders to put in the image (default: minilm effnet effnet-conse voice)
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${1:-runtime}"
tag="${2:-embedstream:latest}"
python="${PYTHON:-$root/.venv/bin/python}"
models="${MODELS:-minilm effnet effnet-conse voice}"
context="$root/build/image"
lock="$root/lock/runtime.lock"
beam_version="$(sed -n 's/^apache-beam==\([^ ;]*\).*/\1/p' "$lock")"

case "$target" in
  runtime) dockerfile="$root/infra/docker/Dockerfile"; base_arg="BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}" ;;
  beam) dockerfile="$root/infra/docker/Dockerfile.beam"
        base_arg="BEAM_SDK_IMAGE=${BEAM_SDK_IMAGE:-apache/beam_python3.11_sdk:$beam_version}" ;;
  *) echo "usage: $0 [runtime|beam] [TAG]" >&2; exit 2 ;;
esac

rm -rf "$context"
mkdir -p "$context/wheels" "$context/models" "$context/source"

echo "[1/3] wheels (this project from a clean copy of the tree, and every dependency at its locked version)"
# A copy: setuptools would reuse an in-tree build/ folder, which can hold modules of another state.
tar -C "$root" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./.embedstream \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' -cf - . | tar -C "$context/source" -xf -
# The dependencies are exactly lock/runtime.lock's (hashes checked), the versions `make test` ran with.
"$python" -m pip wheel --quiet --require-hashes --wheel-dir "$context/wheels" -r "$lock"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$context/wheels" "$context/source"
cp "$lock" "$context/wheels/runtime.lock"
rm -rf "$context/source"
version="$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$root/pyproject.toml")"

echo "[2/3] encoders: $models"
cache="$("$python" -c 'from embedstream.schemas.settings import Settings; print(Settings.load().model.cache_dir)')"
for model in $models; do
  "$python" -m embedstream.workers.cli models build "$model" >/dev/null
  cp -r "$cache/$model" "$context/models/$model"
done

echo "[3/3] docker build $tag ($target, $base_arg)"
docker build --file "$dockerfile" --build-arg "$base_arg" --build-arg "EMBEDSTREAM_VERSION=$version" \
  --tag "$tag" "$context"
