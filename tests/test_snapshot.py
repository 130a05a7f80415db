"""Snapshot and restore (``pipelines.stores.snapshot``): from the CLI on both local backends, and from
``serve --ingest`` while it ingests; restored stores answer exactly as the original did, and a snapshot whose
models are not built here is refused."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.schemas.settings import Settings
from tests.helpers import Server, answers, fill, send_raw, text_event, watermarks
from tests.helpers import store_cli as cli

pytestmark = pytest.mark.integration


def contents(settings: Settings) -> dict[str, tuple[dict, dict]]:
    store = open_store(settings.qdrant)
    try:
        return {p.id: (p.payload, p.vectors) for p in store.scroll(with_vectors=True)}
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_a_snapshot_restores_into_a_new_path_and_answers_the_same(make_settings, tmp_path, backend):
    settings = make_settings(kafka={"partitions": 1}, qdrant={"backend": backend})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    fill(settings, 200)
    run_ingest(settings)
    archive = tmp_path / "backup.tar"
    taken = cli(settings, "snapshot", str(archive))
    assert taken.returncode == 0, taken.stderr
    assert "points" in taken.stdout and archive.exists()

    restored = settings.replace(qdrant={"path": str(tmp_path / "restored")})
    done = cli(restored, "restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert answers(restored) == answers(settings)
    assert contents(restored) == contents(settings)

    again = cli(restored, "restore", str(archive))
    assert again.returncode == 2 and "already holds a store" in again.stderr

    elsewhere = restored.replace(qdrant={"path": str(tmp_path / "elsewhere")}, model={"cache_dir": str(tmp_path)})
    refused = cli(elsewhere, "restore", str(archive))
    assert refused.returncode == 2 and "minilm@1 is not built here" in refused.stderr
    assert not (tmp_path / "elsewhere").exists() or not any((tmp_path / "elsewhere").iterdir())


def test_serve_takes_a_snapshot_while_it_ingests(make_settings, tmp_path):
    settings = make_settings(kafka={"partitions": 1}, qdrant={"snapshot_dir": str(tmp_path / "snapshots")})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    fill(settings, 300)
    server = Server(settings, "--ingest")
    stop, sent = threading.Event(), [0]

    def produce() -> None:  # new events the whole time, about nothing the queries ask
        while not stop.wait(0.03):
            text = f"status report {sent[0]}: conveyor line {sent[0] % 7} ran at {100 + sent[0]} units per hour"
            send_raw(settings, [(None, text_event(f"live-{sent[0]}", text), [])])
            sent[0] += 1

    producer = threading.Thread(target=produce)
    try:
        deadline = time.monotonic() + 120
        while committed_offsets(settings.kafka) != watermarks(settings):
            assert time.monotonic() < deadline, "the first events were never all stored"
            time.sleep(0.5)
        producer.start()
        time.sleep(1.5)
        response = httpx.post(f"{server.url}/store/snapshot", json={"name": "during-ingest"}, timeout=120)
        assert response.status_code == 200, response.text
        taken = response.json()
        time.sleep(1.5)
        stop.set()
        producer.join()
        bad = httpx.post(f"{server.url}/store/snapshot", json={"name": "../escape"}, timeout=30)
        assert bad.status_code == 422
    finally:
        stop.set()
        output = server.stop()
    assert server.process.returncode == 0, output[-3000:]

    archive = tmp_path / "snapshots" / "during-ingest.tar"
    assert taken["path"] == str(archive) and archive.exists()
    restored = settings.replace(qdrant={"path": str(tmp_path / "restored")})
    assert cli(restored, "restore", str(archive)).returncode == 0
    before, after = contents(restored), contents(settings)
    assert len(before) == taken["points"] and 300 < len(before) < len(after)  # mid-stream, and streaming went on
    assert all(before[pid][0] == after[pid][0] for pid in before)  # a consistent prefix: nothing half-written
    assert all(np.allclose(before[pid][1]["minilm"], after[pid][1]["minilm"]) for pid in before)
    assert answers(restored) == answers(settings)  # the streamed events answer none of the queries
