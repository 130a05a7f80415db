"""The API against its own OpenAPI schema, by schemathesis (its CLI, as a user would run it).

Every operation, requests generated from the served schema (valid and invalid, with ``--checks all``): no
server error, no schema-valid request rejected, no invalid one accepted, every answer's status, content type
and body as the schema declares them. The one exception is written down in ``tests/schemathesis.toml``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from embedstream.onnx_models.corpus import corpus_records
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.schemas.point import PointRecord, point_id
from embedstream.schemas.settings import Settings
from embedstream.workers.api.auth import key_hash
from tests.helpers import Server

pytestmark = pytest.mark.integration

KEY = "es_schemathesis-admin-key-for-tests-only"
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("st")


def seed_store(settings: Settings, n: int = 40) -> None:
    """A collection with real text points (the corpus, embedded by the real model) to search."""
    records = corpus_records()[:n]
    encoder = TextEncoder.from_settings(settings.model)
    vectors = encoder.embed([r["text"] for r in records])
    store = open_store(settings.qdrant)
    try:
        store.ensure_spaces([SpaceSpec(encoder.space, encoder.dim, encoder.manifest.ref)])
        store.upsert(
            [
                PointRecord(
                    id=point_id("text", r["id"]),
                    vectors={encoder.space: np.asarray(v, dtype=np.float32).tolist()},
                    payload={"modality": "text", "id": r["id"], "text": r["text"], "metadata": r["metadata"]},
                )
                for r, v in zip(records, vectors, strict=True)
            ]
        )
        store.flush()
    finally:
        store.close()


def test_schemathesis_finds_no_server_error_and_no_contract_breach(make_settings: Callable[..., Settings]) -> None:
    # With an admin key configured and sent: the security schemes are enforced, and every operation, the admin
    # steps included, is reached.
    settings = make_settings(api={"keys": [{"name": "schemathesis", "sha256": key_hash(KEY), "scope": "admin"}]})
    seed_store(settings)
    server = Server(settings)
    try:
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {KEY}",
                "--checks",
                "all",
                "--max-examples",
                os.environ.get("EMBEDSTREAM_SCHEMATHESIS_EXAMPLES", "40"),
                "--seed",
                os.environ.get("EMBEDSTREAM_SCHEMATHESIS_SEED", "20261130"),
                "--request-timeout",
                "30",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=840,
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert "No issues found" in run.stdout or "passed" in run.stdout.lower(), run.stdout[-3000:]
