"""kill -9 the stream-mode ingest process mid-run, restart it: every valid event is stored exactly once."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.workers.demo import sample_corpus
from embedstream.workers.sample_media import sample_photos
from tests.helpers import send_raw, settings_env, start_stream_ingest, stored_ids, text_event, watermarks

pytestmark = [pytest.mark.brokers("tansu", "kafka"), pytest.mark.integration]

TOTAL = 1200


def _ingest_process(settings, log_path):
    # frequent commits, so a kill lands mid-run
    return start_stream_ingest(settings, log_path, {"EMBEDSTREAM_PIPELINE__MAX_RECORDS_PER_BUNDLE": "64"})


def _committed_total(settings) -> int:
    return sum(v or 0 for v in committed_offsets(settings.kafka).values())


def _wait(predicate, timeout_s: float, what: str, process=None, log_path=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"ingest exited early ({process.returncode}): {log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_kill_9_mid_stream_then_restart_stores_each_event_once(make_settings, tmp_path):
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    lines = sample_corpus().read_text().splitlines()
    send_raw(
        settings, [(f"k{i}".encode(), text_event(f"k{i}", f"{lines[i % len(lines)]} #{i}"), []) for i in range(TOTAL)]
    )

    first_log = tmp_path / "first.log"
    first = _ingest_process(settings, first_log)
    _wait(lambda: _committed_total(settings) >= 200, 120, "the first commits", first, first_log)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    at_kill = _committed_total(settings)
    assert 0 < at_kill < TOTAL, "the kill must land mid-run"

    second_log = tmp_path / "second.log"
    second = _ingest_process(settings, second_log)
    marks = watermarks(settings)
    _wait(lambda: committed_offsets(settings.kafka) == marks, 180, "the restart to catch up", second, second_log)
    second.send_signal(signal.SIGTERM)  # stream mode stops cleanly on SIGTERM
    assert second.wait(timeout=60) == 0, second_log.read_text()[-3000:]

    store = open_store(settings.qdrant)
    try:
        ids = [p.payload["id"] for p in store.scroll()]
        assert store.count() == TOTAL
    finally:
        store.close()
    assert len(ids) == len(set(ids)) == TOTAL
    assert set(ids) == {f"k{i}" for i in range(TOTAL)}
    assert os.path.getsize(second_log) > 0


def test_sigterm_during_a_media_batch_exits_cleanly_and_loses_nothing(make_settings, media_models, tmp_path):
    """A stop (SIGTERM, as Kubernetes sends it) while pictures are being decoded and encoded: the process finishes
    or abandons its bundle, exits 0 within a bounded time, commits only what is stored, and a restart completes."""
    settings = make_settings(kafka={"partitions": 1}, media={"modalities": ["text", "image"], "batch_size": 8})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    photos = []
    for name, path in sample_photos().items():  # full-size pictures: decoding them is the slow part
        image = Image.open(path).convert("RGB").resize((1600, 1200))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=92)
        photos.append((name, buffer.getvalue()))
    total = 400  # enough that the stop lands mid-run (~80 pictures/s here, ORT threads sleeping between runs)
    send_raw(
        settings,
        [
            (f"p{i}".encode(), photos[i % len(photos)][1], [("es-id", f"p{i}".encode()), ("es-modality", b"image")])
            for i in range(total)
        ],
    )

    log_path = tmp_path / "stream.log"
    process = _ingest_process(settings, log_path)
    _wait(lambda: b"points stored" in log_path.read_bytes(), 180, "the first stored pictures", process, log_path)
    process.send_signal(signal.SIGTERM)  # mid-run: batches are being decoded and encoded now
    stopped = time.monotonic()
    assert process.wait(timeout=90) == 0, log_path.read_text()[-3000:]
    assert time.monotonic() - stopped < 90
    committed = committed_offsets(settings.kafka).get(0) or 0
    assert committed < total, "the stop must land mid-run"
    assert {f"p{i}" for i in range(committed)} <= stored_ids(settings)  # committed means stored

    env = settings_env(settings)
    drain = subprocess.run(
        [sys.executable, "-m", "embedstream.workers.cli", "ingest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert drain.returncode == 0, drain.stderr[-3000:]
    assert stored_ids(settings) == {f"p{i}" for i in range(total)}
    assert committed_offsets(settings.kafka) == watermarks(settings)
