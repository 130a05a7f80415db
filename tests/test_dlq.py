"""Dead letters can be counted and replayed: nothing is lost, nothing replays twice."""

from __future__ import annotations

import json

import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.workers import dlq
from tests.helpers import b64, read_topic, send_raw, text_event

pytestmark = [pytest.mark.brokers("tansu", "kafka"), pytest.mark.integration]


def test_stats_and_replay_by_reason(make_settings):
    settings = make_settings(media={"modalities": ["text"]})  # a text-only pipeline: pictures are dead letters
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    image = json.dumps({"schema": 1, "id": "img-1", "modality": "image", "data": b64(b"\x89PNG...")}).encode()
    send_raw(
        settings,
        [
            (b"t1", text_event("t1", "a valid sentence"), []),
            (b"img-1", image, [("trace-id", b"42")]),
            (None, b"{broken", []),
            (None, b"{also broken", []),
        ],
    )
    run_ingest(settings)
    assert dlq.stats(settings) == {"unsupported_modality": 1, "malformed_json": 2}
    before = len(read_topic(settings, settings.kafka.topic))

    report = dlq.replay(settings, ["unsupported_modality"])

    assert report.replayed == 1 and report.by_reason == {"unsupported_modality": 1, "malformed_json": 2}
    events = read_topic(settings, settings.kafka.topic)
    assert len(events) == before + 1
    original, replayed = sorted((r for r in events if r.key == b"img-1"), key=lambda r: r.offset)
    assert replayed.value == original.value == image
    assert replayed.timestamp == original.timestamp  # re-produced as it was
    headers = dict(replayed.headers)
    assert replayed.headers[0] == ("trace-id", b"42")  # original headers back, es-dlq-* context stripped
    assert not any(k.startswith("es-dlq-") for k in headers)
    origin = (settings.kafka.topic, original.partition, original.offset)
    assert (
        headers["es-replay-topic"].decode(),
        int(headers["es-replay-partition"]),
        int(headers["es-replay-offset"]),
    ) == origin
    assert headers["es-replay-id"] == f"{settings.kafka.topic}/{original.partition}/{original.offset}".encode()

    again = dlq.replay(settings, ["unsupported_modality"])
    assert again.replayed == 0 and again.already_replayed == 1  # the ledger remembers
    everything = dlq.replay(settings)  # another filter, the same ledger: only the two not replayed yet
    assert everything.replayed == 2 and everything.already_replayed == 1
    assert dlq.replay(settings).replayed == 0
