"""End to end on real parts: a real broker (tansu and Apache Kafka) → Beam (FnApiRunner) → minilm on ONNX Runtime →
qdrant-edge."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.schemas.dead_letter import DeadLetter
from embedstream.schemas.point import point_id
from embedstream.workers.demo import sample_corpus
from tests.helpers import b64, read_topic, reset_group, send_raw, text_event, watermarks

CORPUS = [json.loads(line) for line in sample_corpus().read_text().splitlines()]
MAX_EVENT_BYTES = 1 << 20

pytestmark = [pytest.mark.brokers("tansu", "kafka"), pytest.mark.integration]


def invalid_events() -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """(expected reason, key, value, headers): at least one event for each way an event can be wrong."""
    return [
        ("malformed_json", None, b'{"schema": 1, "id": "x", "modality": "text", "text": ', []),
        ("malformed_json", None, b"[1, 2, 3]", []),
        ("malformed_json", b"empty", b"", []),  # an empty value (a null one with a key is a tombstone: a delete)
        ("missing_field", None, b'{"schema": 1, "modality": "text", "text": "no id here"}', []),
        ("unknown_modality", None, b'{"schema": 1, "id": "m1", "modality": "smell", "text": "roses"}', []),
        (
            "wrong_content",
            None,
            json.dumps({"schema": 1, "id": "w1", "modality": "text", "data": b64(b"hi")}).encode(),
            [],
        ),
        ("empty_content", None, text_event("e1", " \n\t "), []),
        ("oversized", None, text_event("o1", "long " * 4000), []),
        ("oversized", None, text_event("o2", "x" * (MAX_EVENT_BYTES + 10)), []),
        ("invalid_utf8", None, b'{"schema": 1, "id": "u1", "modality": "text", "text": "caf\xe9"}', []),
        ("bad_base64", None, b'{"schema": 1, "id": "b1", "modality": "image", "data": "not*base64!"}', []),
        ("unsupported_schema", None, b'{"schema": 2, "id": "s1", "modality": "text", "text": "future"}', []),
        ("missing_headers", None, b"binary text without an id", [("es-modality", b"text")]),
        ("invalid_utf8", None, b"\xff\xfe binary", [("es-modality", b"text"), ("es-id", b"bin-bad")]),
        ("invalid_field", None, text_event("f1", "typo field", extra_field=1), []),
        (
            "undecodable",  # a picture event whose bytes are no picture
            None,
            json.dumps({"schema": 1, "id": "img1", "modality": "image", "data": b64(b"\x89PNG")}).encode(),
            [],
        ),
    ]


@pytest.fixture
def mixed_topic(make_settings, media_models):
    """2,000 valid text events (some in the binary form, some repeating an id) with the invalid ones interleaved
    (the picture models are built so that a bad picture is judged by its decoder)."""
    settings = make_settings(pipeline={"max_event_bytes": MAX_EVENT_BYTES, "max_text_chars": 16_384})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    rng = random.Random(7)
    valid = []
    for i in range(2000):
        doc = CORPUS[i % len(CORPUS)]
        event_id = f"doc-{i % 1900}"  # ids 0..99 appear twice: the later event must win
        text = f"{doc['text']} (variant {i})"
        valid.append((event_id, text))
    messages: list[tuple[str | None, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    for event_id, text in valid:
        if rng.random() < 0.1:
            messages.append(
                (None, event_id.encode(), text.encode(), [("es-id", event_id.encode()), ("es-modality", b"text")])
            )
        else:
            messages.append((None, event_id.encode(), text_event(event_id, text), []))
    for bad in invalid_events():
        messages.insert(rng.randrange(len(messages)), bad)
    send_raw(settings, [(key, value, headers) for _, key, value, headers in messages], max_request_size=4 << 20)
    latest = {event_id: text for event_id, text in valid}  # dict keeps the last write per id
    return settings, latest, [m[0] for m in messages if m[0] is not None]


def test_drain_stores_valid_ids_dead_letters_the_rest_and_commits(mixed_topic):
    settings, latest, expected_reasons = mixed_topic

    result = run_ingest(settings)

    assert result.points_upserted >= len(latest)
    assert result.dead_letters == len(expected_reasons)
    store = open_store(settings.qdrant)
    try:
        stored = {p.payload["id"]: p for p in store.scroll()}
        assert store.count() == len(latest)
    finally:
        store.close()
    assert set(stored) == set(latest)
    for event_id, text in latest.items():
        point = stored[event_id]
        assert point.id == point_id("text", event_id)
        assert point.payload["text"] == text  # text kept, and the later duplicate won
        assert point.payload["models"] == {"minilm": "minilm@1"}

    dead = read_topic(settings, settings.kafka.dead_letter_topic)
    reasons = Counter(DeadLetter.context_of(r.headers)["reason"] for r in dead)
    assert reasons == Counter(expected_reasons)
    for record in dead:
        context = DeadLetter.context_of(record.headers)
        assert context["topic"] == settings.kafka.topic
        assert int(context["offset"]) >= 0 and context["message"]

    committed = committed_offsets(settings.kafka)
    assert committed == watermarks(settings)


def test_dead_letter_keeps_original_bytes_and_points_back(make_settings):
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic])
    original = b'{"schema": 1, "id": "x", "modality": "text", "text": '
    send_raw(settings, [(b"k1", original, [("trace", b"abc")]), (b"ok", text_event("ok", "a fine event"), [])])

    run_ingest(settings)

    (dead,) = read_topic(settings, settings.kafka.dead_letter_topic)
    assert dead.value == original and dead.key == b"k1"
    assert ("trace", b"abc") in dead.headers
    context = DeadLetter.context_of(dead.headers)
    assert context["reason"] == "malformed_json" and context["stage"] == "parse"
    source = read_topic(settings, settings.kafka.topic)
    bad = next(r for r in source if r.value == original)
    assert (int(context["partition"]), int(context["offset"])) == (bad.partition, bad.offset)


def test_replay_from_start_gives_same_points_and_vectors(make_settings):
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(f"r{i}".encode(), text_event(f"r{i}", CORPUS[i]["text"]), []) for i in range(300)])
    run_ingest(settings)
    store = open_store(settings.qdrant)
    first = {p.id: p.vectors["minilm"] for p in store.scroll(with_vectors=True)}
    store.close()

    reset_group(settings)
    again = run_ingest(settings)

    assert again.points_upserted == 300  # really re-read and re-written
    store = open_store(settings.qdrant)
    second = {p.id: p.vectors["minilm"] for p in store.scroll(with_vectors=True)}
    assert store.count() == 300
    store.close()
    assert set(first) == set(second)
    for pid, vector in first.items():
        np.testing.assert_allclose(second[pid], vector, atol=1e-5)


def test_duplicate_ids_last_write_wins_by_kafka_order(make_settings):
    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    versions = ["first version of the note", "second version of the note", "third and final version"]
    filler = [(f"f{i}".encode(), text_event(f"f{i}", CORPUS[i]["text"]), []) for i in range(40)]
    messages = [*filler[:10], (b"dup", text_event("dup", versions[0]), []), *filler[10:25]]
    messages += [
        (b"dup", text_event("dup", versions[1]), []),
        *filler[25:],
        (b"dup", text_event("dup", versions[2]), []),
    ]
    send_raw(settings, messages)

    run_ingest(settings)

    store = open_store(settings.qdrant)
    try:
        (point,) = store.retrieve([point_id("text", "dup")])
        assert point.payload["text"] == versions[2]
        assert store.count() == 41
        assert store.count({"id": "dup"}) == 1
    finally:
        store.close()


def test_server_api_path_matches_embedded_store(make_settings, tmp_path):
    edge = make_settings()
    ensure_topics(edge.kafka, [edge.kafka.topic])
    send_raw(edge, [(f"s{i}".encode(), text_event(f"s{i}", CORPUS[i * 2]["text"]), []) for i in range(200)])
    run_ingest(edge)
    server = edge.model_copy(
        update={
            "qdrant": edge.qdrant.model_copy(update={"backend": "local", "path": str(tmp_path / "client-local")}),
            "kafka": edge.kafka.model_copy(update={"group_id": edge.kafka.group_id + ".server"}),
        }
    )
    run_ingest(server)

    stores = [open_store(edge.qdrant), open_store(server.qdrant)]
    try:
        edge_points, server_points = ({p.id: p for p in s.scroll(with_vectors=True)} for s in stores)
        assert set(edge_points) == set(server_points) and len(edge_points) == 200
        for pid, point in edge_points.items():
            np.testing.assert_allclose(server_points[pid].vectors["minilm"], point.vectors["minilm"], atol=1e-5)
            assert server_points[pid].payload["text"] == point.payload["text"]
        query = edge_points[next(iter(edge_points))].vectors["minilm"]
        assert [h.id for h in stores[0].search("minilm", query, 5)] == [
            h.id for h in stores[1].search("minilm", query, 5)
        ]
    finally:
        for store in stores:
            store.close()
