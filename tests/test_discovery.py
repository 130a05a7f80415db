"""Topics may be a list or a pattern, and topics and partitions that appear while streaming are read."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import PartitionSpec, ensure_topics, partition_backlog
from embedstream.schemas.settings import KafkaSettings
from tests.helpers import send_raw, stored_ids, text_event

pytestmark = pytest.mark.brokers("tansu", "kafka")


@pytest.mark.unit
def test_a_pattern_never_reads_the_dead_letter_topic_its_ledger_or_internal_topics():
    kafka = KafkaSettings(topic_pattern=r"app\..*", dead_letter_topic="app.dlq")
    existing = {"app.orders", "app.tickets", "app.dlq", "app.dlq.replayed", "__consumer_offsets", "other"}
    assert kafka.read_topics(existing) == ["app.orders", "app.tickets"]
    assert KafkaSettings(topics=["a", "b"]).read_topics(existing) == ["a", "b"]
    with pytest.raises(ValidationError):
        KafkaSettings(topic_pattern="app.(")


@pytest.mark.integration
def test_a_list_of_topics_is_drained(make_settings):
    settings = make_settings()
    first, second = f"{settings.kafka.topic}.a", f"{settings.kafka.topic}.b"
    settings = settings.replace(kafka={"topics": [first, second]})
    ensure_topics(settings.kafka, [first, second])
    for topic in (first, second):
        send_raw(
            settings.replace(kafka={"topic": topic}),
            [(f"{topic}-{i}".encode(), text_event(f"{topic}-{i}", f"listed topic {topic} {i}"), []) for i in range(5)],
        )
    assert run_ingest(settings).points_upserted == 10


@pytest.mark.integration
def test_a_topic_that_appears_while_streaming_is_read_with_nothing_lost(make_settings):
    settings = make_settings(pipeline={"mode": "stream", "discovery_interval_s": 1.0}, media={"modalities": ["text"]})
    base = settings.kafka.topic
    settings = settings.replace(kafka={"topic_pattern": rf"{base}\.in\..*"})
    first = settings.replace(kafka={"topic": f"{base}.in.first"})
    ensure_topics(first.kafka, [first.kafka.topic])
    send_raw(first, [(f"f{i}".encode(), text_event(f"f{i}", f"first topic sentence {i}"), []) for i in range(10)])
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_ingest(settings, stop=stop)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=run)
    reader.start()
    try:
        later = settings.replace(kafka={"topic": f"{base}.in.later"})
        time.sleep(3)
        ensure_topics(later.kafka, [later.kafka.topic])  # appears while the stream runs
        send_raw(later, [(f"l{i}".encode(), text_event(f"l{i}", f"later topic sentence {i}"), []) for i in range(10)])
        send_raw(first, [(b"f-more", text_event("f-more", "the first topic goes on"), [])])
        deadline = time.monotonic() + 60
        while True:
            time.sleep(1)
            specs = [PartitionSpec(t, p, 0, None) for t in (first.kafka.topic, later.kafka.topic) for p in range(3)]
            if not any(backlog.lag for backlog in partition_backlog(settings.kafka, specs).values()):
                break
            assert time.monotonic() < deadline, "the new topic was not read within 60 s"
    finally:
        stop.set()
        reader.join(120)
    assert not reader.is_alive() and not errors, errors
    assert stored_ids(settings) == {f"f{i}" for i in range(10)} | {f"l{i}" for i in range(10)} | {"f-more"}
