"""Deletes and tombstones: ``op: delete`` events and Kafka tombstones remove what an id made, in Kafka order."""

from __future__ import annotations

import json
import random
import signal
import subprocess

import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.schemas.dead_letter import Reason
from embedstream.schemas.envelope import Deletion, Envelope, Modality, Rejection, parse_event
from embedstream.schemas.records import KafkaRecord
from embedstream.workers.produce import read_events
from embedstream.workers.sample_media import make_sample_video, sample_photos, sample_voices
from tests.helpers import (
    Message,
    binary_message,
    delete_event,
    read_topic,
    reset_group,
    send_raw,
    settings_env,
    start_stream_ingest,
    text_event,
    wait_for,
    watermarks,
)

pytestmark = pytest.mark.brokers("tansu", "kafka")


def record(value: bytes | None, key: bytes | None = b"k", headers: tuple = ()) -> KafkaRecord:
    return KafkaRecord(topic="t", partition=0, offset=0, key=key, value=value, headers=headers)


@pytest.mark.unit
def test_the_forms_of_a_delete_parse_and_an_empty_value_stays_a_dead_letter() -> None:
    assert parse_event(record(delete_event("a"))) == Deletion("a", Modality.TEXT)
    assert parse_event(record(None, key=b"doc-7")) == Deletion("doc-7", None)  # a tombstone: the key is the id
    binary = record(b"", headers=(("es-id", b"b"), ("es-modality", b"image"), ("es-op", b"delete")))
    assert parse_event(binary) == Deletion("b", Modality.IMAGE)

    with_content = json.loads(delete_event("a")) | {"text": "why"}
    refused = parse_event(record(json.dumps(with_content).encode()))
    assert isinstance(refused, Rejection) and refused.reason is Reason.WRONG_CONTENT
    for value, key, reason in [
        (b"", b"k", Reason.MALFORMED_JSON),  # empty, not null: not a tombstone
        (None, None, Reason.MALFORMED_JSON),  # a tombstone for no key
        (None, b"\xff\xfe", Reason.INVALID_UTF8),
        (None, b"x" * 513, Reason.INVALID_FIELD),
    ]:
        rejected = parse_event(record(value, key=key))
        assert isinstance(rejected, Rejection) and rejected.reason is reason, (value, key, rejected)
    upsert = parse_event(record(text_event("u", "an ordinary event")))
    assert isinstance(upsert, Envelope) and upsert.op == "upsert"


@pytest.mark.unit
def test_what_a_deletion_covers() -> None:
    text = {"id": "a", "modality": "text"}
    picture = {"id": "a", "modality": "image"}
    frame = {"id": "a-3", "modality": "video_frame", "video_id": "a"}
    view = {"id": "a", "modality": "video", "video_id": "a"}
    frame_named_a = {"id": "a", "modality": "video_frame", "video_id": "other"}
    tombstone = Deletion("a")
    assert all(tombstone.covers(p) for p in (text, picture, frame, view))
    assert not tombstone.covers(frame_named_a)  # a frame is part of its video, deleted with it only
    assert Deletion("a", Modality.TEXT).covers(text) and not Deletion("a", Modality.TEXT).covers(picture)
    video = Deletion("a", Modality.VIDEO_END)
    assert video.covers(frame) and video.covers(view) and not video.covers(text)


# (key, value) in Kafka order on one partition, and what must be stored afterwards
ORDERED: list[tuple[bytes, bytes | None]] = [
    (b"a", text_event("a", "created then deleted")),
    (b"a", delete_event("a")),
    (b"b", delete_event("b")),
    (b"b", text_event("b", "deleted then created")),
    (b"c", text_event("c", "created then tombstoned")),
    (b"c", None),
    (b"nobody", None),  # a tombstone for an id never stored: nothing to do, no dead letter
    (b"e", text_event("e", "kept: the delete names another modality")),
    (b"e", delete_event("e", "image")),
    (b"f", text_event("f", "first version")),
    (b"f", delete_event("f")),
    (b"f", text_event("f", "second version")),
    (b"f", None),
    (b"f", text_event("f", "third version, the one that stays")),
]
EXPECTED = {
    "b": "deleted then created",
    "e": "kept: the delete names another modality",
    "f": "third version, the one that stays",
}


def stored_texts(settings) -> dict[str, str]:
    store = open_store(settings.qdrant)
    try:
        return {str(p.payload["id"]): str(p.payload.get("text")) for p in store.scroll()}
    finally:
        store.close()


@pytest.mark.integration
@pytest.mark.parametrize("bundle", [1000, 3], ids=["one-bundle", "many-bundles"])
@pytest.mark.parametrize("backend", ["edge", "local"])
def test_deletes_apply_in_kafka_order_on_both_stores_and_a_replay_gives_the_same(make_settings, backend, bundle):
    """In one bundle a create is still being embedded when its delete passes it: the delete must win anyway."""
    settings = make_settings(
        kafka={"partitions": 1}, qdrant={"backend": backend}, pipeline={"max_records_per_bundle": bundle}
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(key, value, []) for key, value in ORDERED])

    result = run_ingest(settings)

    assert stored_texts(settings) == EXPECTED
    assert result.deletions == sum(value is None or b'"delete"' in value for _, value in ORDERED)
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []
    reset_group(settings)  # replay the whole topic over the store as it is
    run_ingest(settings)
    assert stored_texts(settings) == EXPECTED
    assert committed_offsets(settings.kafka) == watermarks(settings)


@pytest.mark.integration
def test_a_video_is_deleted_whole_by_a_tombstone_or_a_delete_and_can_be_made_again(
    make_settings, media_models, tmp_path
):
    photos, voices = sample_photos(), sample_voices()
    path = make_sample_video(tmp_path / "v.mkv", [photos["coffee"], photos["camera"]], [voices["caribbean-f4-1"]], 2.0)
    events = [binary_message(b"v", e) for e in read_events([path]) if not isinstance(e, str)]
    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    keep: Message = (b"t", text_event("t", "a sentence beside the video"), [])

    def video_points() -> list[str]:
        store = open_store(settings.qdrant)
        try:
            return sorted(str(p.payload["modality"]) for p in store.scroll(where={"video_id": "v"}))
        finally:
            store.close()

    send_raw(settings, [*events, keep, (b"v", None, [])])  # frames, segments and the end, then a tombstone
    run_ingest(settings)
    assert video_points() == [] and set(stored_texts(settings)) == {"t"}

    send_raw(settings, events)  # made again
    run_ingest(settings)
    made = video_points()
    assert made.count("video") == 1 and "video_frame" in made and "video_audio" in made

    send_raw(settings, [(b"v", delete_event("v", "video_end"), [])])
    run_ingest(settings)
    assert video_points() == [] and set(stored_texts(settings)) == {"t"}
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []


@pytest.mark.integration
def test_creates_and_deletes_survive_kill_9_mid_stream_in_order(make_settings, tmp_path):
    """2,000 creates, deletes and tombstones over 60 ids; the stream run is killed with SIGKILL mid-topic and
    restarted: what is stored is exactly each id's last event (its last version, or nothing)."""
    settings = make_settings(kafka={"partitions": 2}, media={"modalities": ["text"]})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    rng = random.Random(12)
    messages: list[Message] = []
    final: dict[str, str | None] = {}
    for i in range(2000):
        key = f"id{rng.randrange(60)}"
        roll = rng.random()
        if roll < 0.2:
            messages.append((key.encode(), None, []))
            final[key] = None
        elif roll < 0.35:
            messages.append((key.encode(), delete_event(key), []))
            final[key] = None
        else:
            text = f"version {i} of {key}"
            messages.append((key.encode(), text_event(key, text), []))
            final[key] = text
    send_raw(settings, messages)
    bundles = {"EMBEDSTREAM_PIPELINE__MAX_RECORDS_PER_BUNDLE": "64"}

    def stream(log_name: str) -> subprocess.Popen[bytes]:
        return start_stream_ingest(settings, tmp_path / log_name, bundles)

    def committed() -> int:
        return sum(v or 0 for v in committed_offsets(settings.kafka).values())

    first = stream("first.log")
    assert wait_for(lambda: committed() >= 300, 120), (tmp_path / "first.log").read_text()[-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert committed() < 2000, "the kill must land mid-topic"
    second = stream("second.log")
    marks = watermarks(settings)
    assert wait_for(lambda: committed_offsets(settings.kafka) == marks, 240), (tmp_path / "second.log").read_text()[
        -2000:
    ]
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=90) == 0

    assert stored_texts(settings) == {key: text for key, text in final.items() if text is not None}
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []


@pytest.mark.integration
def test_the_cli_sends_tombstones_and_modality_deletes(make_settings):
    from tests.helpers import embedstream

    settings = make_settings(kafka={"partitions": 1})
    env = settings_env(settings)
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(k.encode(), text_event(k, f"sentence {k}"), []) for k in ("a", "b", "c")])
    assert embedstream("ingest", env=env).returncode == 0

    tombstones = embedstream("delete", "a", env=env)
    assert tombstones.returncode == 0 and "sent 1 tombstones" in tombstones.stdout, tombstones.stderr
    by_modality = embedstream("delete", "b", "--modality", "text", env=env)
    assert by_modality.returncode == 0 and "sent 1 text deletes" in by_modality.stdout
    ingested = embedstream("ingest", env=env)
    assert ingested.returncode == 0 and "2 deletions" in ingested.stdout, ingested.stdout

    assert set(stored_texts(settings)) == {"c"}
