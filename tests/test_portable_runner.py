"""The same pipeline on the portable (Fn API) path that Flink and Dataflow use."""

from __future__ import annotations

import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from tests.helpers import Message, read_topic, send_raw, text_event, watermarks

pytestmark = pytest.mark.integration

PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def test_drain_on_portable_runner_loopback(make_settings):
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic])
    messages: list[Message] = [
        (f"p{i}".encode(), text_event(f"p{i}", f"portable runner sentence {i}"), []) for i in range(120)
    ]
    messages.insert(60, (None, b"{not json", []))
    send_raw(settings, messages)

    result = run_ingest(settings, PORTABLE)

    assert result.points_upserted == 120 and result.dead_letters == 1
    store = open_store(settings.qdrant)
    try:
        assert store.count() == 120
    finally:
        store.close()
    assert len(read_topic(settings, settings.kafka.dead_letter_topic)) == 1
    assert committed_offsets(settings.kafka) == watermarks(settings)
