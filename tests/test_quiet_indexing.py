"""Stream mode on the embedded store builds its HNSW index at quiet moments (``pipelines.io.quiet_indexer``):
a stream that pauses gets an index, keeps ingesting after it, and a stream told not to index leaves its vectors
to brute force."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from embedstream.onnx_models.corpus import corpus_texts
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.schemas.settings import Settings
from tests.helpers import send_raw, start_stream_ingest, text_event, wait_for

pytestmark = pytest.mark.integration

INDEXING = {  # small enough for a test: any segment gets an HNSW graph, and 50 waiting vectors make a build
    "EMBEDSTREAM_QDRANT__INDEX_MIN_VECTORS": "50",
    "EMBEDSTREAM_QDRANT__COLLECTION_OPTIONS__INDEXING_THRESHOLD_KB": "1",
}


def send_texts(settings: Settings, first: int, count: int) -> None:
    texts = corpus_texts()
    send_raw(settings, [(None, text_event(f"q{i}", texts[i % len(texts)]), []) for i in range(first, first + count)])


def committed(settings: Settings) -> int:
    return sum(v or 0 for v in committed_offsets(settings.kafka).values())


def awaiting(settings: Settings) -> tuple[int, int]:
    """(vectors awaiting the index, points) of the stopped stream's store."""
    store = open_store(settings.qdrant)
    try:
        return store.awaiting_index(), store.count()
    finally:
        store.close()


def run_stream(settings: Settings, log: Path, pause_s: float, quiet_s: str) -> str:
    """100 texts, a pause, 20 more, each batch waited for until committed; then a clean stop. → the log."""
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    stream = start_stream_ingest(settings, log, {**INDEXING, "EMBEDSTREAM_QDRANT__INDEX_WHEN_QUIET_S": quiet_s})
    try:
        send_texts(settings, 0, 100)
        assert wait_for(lambda: committed(settings) == 100, 120), log.read_text()[-2000:]
        time.sleep(pause_s)  # the quiet moment
        send_texts(settings, 100, 20)
        assert wait_for(lambda: committed(settings) == 120, 60), log.read_text()[-2000:]
    finally:
        stream.send_signal(signal.SIGTERM)
        assert stream.wait(timeout=90) == 0, log.read_text()[-2000:]
    return log.read_text()


def test_a_quiet_stream_gets_its_index_and_keeps_ingesting(make_settings, tmp_path):
    settings = make_settings(kafka={"partitions": 1})
    log = run_stream(settings, tmp_path / "indexed.log", pause_s=6.0, quiet_s="1.0")
    built = re.findall(r"indexed (\d+) vectors at a quiet moment", log)
    assert built == ["100"], log[-2000:]  # the 100 texts' minilm vectors (sparse bm25 ones are indexed as written)
    left, points = awaiting(settings)
    assert (points, left) == (120, 20)  # the 20 after the build wait for the next quiet moment with 50 or more

    unindexed = make_settings(kafka={"partitions": 1})
    log = run_stream(unindexed, tmp_path / "exact.log", pause_s=3.0, quiet_s="null")
    assert "at a quiet moment" not in log
    left, points = awaiting(unindexed)
    assert (points, left) == (120, 120)  # every minilm vector still searched by brute force
