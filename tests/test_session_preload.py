"""Sessions built ahead on a background thread (``session.preload_sessions``) and taken by the step that would
have built them: once, only for the same file and settings, and every one an ingest preloads is opened."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from embedstream.onnx_models.registry import load_manifest
from embedstream.onnx_models.session import discard_preloaded, preload_sessions, session_for
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.schemas.settings import ModelSettings, Settings
from tests.helpers import send_raw, text_event

pytestmark = pytest.mark.integration


def _loads(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "embedstream.onnx_models.session" and "loaded" in r.getMessage()]


def _ahead(record: logging.LogRecord) -> bool:
    """Logged by the preload's thread."""
    return (record.threadName or "").startswith("session-preload")


def test_a_preloaded_session_is_taken_once_and_only_for_its_settings(
    model_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest, folder = load_manifest(model_cache, "minilm")
    path = folder / manifest.onnx_file
    one_thread, two_threads = ModelSettings(intra_op_threads=1), ModelSettings(intra_op_threads=2)
    caplog.set_level(logging.INFO, logger="embedstream.onnx_models.session")

    preload_sessions([(path, one_thread), (path, two_threads)])
    try:
        taken = session_for(path, one_thread)  # waits for the preload's first build
        again = session_for(path, one_thread)
    finally:
        left = discard_preloaded()

    assert left == [path.name]  # the two-thread one: other settings, not taken (built or not by now)
    assert discard_preloaded() == []
    one_thread_loads = [r for r in _loads(caplog) if "intra_op_threads=1" in r.getMessage()]
    assert [_ahead(r) for r in one_thread_loads] == [True, False]  # taken: built ahead; `again`: built anew
    assert taken is not again
    feed = {i.name: np.ones((1, 5), dtype=np.int64) for i in taken.get_inputs()}
    np.testing.assert_allclose(taken.run(None, feed)[0], again.run(None, feed)[0], atol=1e-6)


def test_an_ingest_opens_every_session_it_built_ahead(
    media_models: Path, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Default settings, every model built: the text, picture, picture-to-text head and sound sessions are built
    by the preload while the run starts, and no step builds one again or leaves one unused."""
    discard_preloaded()  # nothing left from another test
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"one", text_event("one", "a first event to encode"), [])])
    caplog.set_level(logging.INFO)

    result = run_ingest(settings)

    assert result.points_upserted == 1
    loads = _loads(caplog)
    assert len(loads) == 4, [r.getMessage() for r in loads]
    assert all(_ahead(r) for r in loads), [r.threadName for r in loads]
    assert not [r for r in caplog.records if "loaded ahead" in r.getMessage()]
