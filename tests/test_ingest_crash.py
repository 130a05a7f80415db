"""kill -9 the stream-mode ingest process mid-run, restart it: every valid event is stored exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.workers.demo import sample_corpus
from tests.helpers import send_raw, settings_env, text_event, watermarks

TOTAL = 1200


def _ingest_process(settings, log_path):
    env = settings_env(settings)
    env["EMBEDSTREAM_PIPELINE__MAX_RECORDS_PER_BUNDLE"] = "64"  # frequent commits, so a kill lands mid-run
    return subprocess.Popen(
        [sys.executable, "-m", "embedstream.workers.cli", "ingest", "--mode", "stream"],
        env=env,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )


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
