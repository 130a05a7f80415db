#!/usr/bin/env bash
# Makes a Debian base image with Python 3.11 from a Debian mirror, for builds where no image registry can be
# reached (the Dockerfiles take it through BASE_IMAGE). Needs mmdebstrap and root (or a user namespace).
#
# usage: infra/docker/debian-base.sh [TAG]     (default local/debian:bookworm)
set -euo pipefail
tag="${1:-local/debian:bookworm}"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm - \
  | docker import - "$tag"
echo "$tag"
