"""Whatever a record holds — any bytes, key, headers, timestamp or nesting — it becomes a point or a dead letter.

Hypothesis generates batches of records (raw bytes; JSON envelopes that Python's json accepts but JSON and the
store do not: lone surrogates, NaN, 1e400, huge integers, deep nesting; binary-form events with arbitrary
headers; any timestamp), sends them to a real broker and drains them through the real chain of stages
(parse, text, picture and sound embedders, delivery) into a real embedded store. Every record must be
accounted for exactly: a stored point whose ``source`` is its offset, or a dead letter naming its offset.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.schemas.dead_letter import DeadLetter
from embedstream.schemas.envelope import Deletion, Envelope, Modality, parse_event
from embedstream.schemas.records import KafkaRecord
from tests.helpers import read_topic, watermarks

pytestmark = pytest.mark.integration

MODALITIES = ["text", "image", "audio", "video_frame", "video_audio", "video_end", "bogus"]
header_keys = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
# Hypothesis leaves lone surrogates out of text by default; they are exactly what broke ingestion, so mix them in.
texts = st.text(
    alphabet=st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
    max_size=40,
)
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,  # json.dumps escapes lone surrogates as \\udXXX
)
json_values = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"n": value}
    return value


@st.composite
def json_envelope(draw: st.DrawFn) -> bytes:
    fields: dict[str, Any] = {"schema": draw(st.sampled_from([1, 1, 1, 2, "1"])), "id": "placeholder"}
    fields["modality"] = draw(st.sampled_from(MODALITIES))
    content = draw(st.sampled_from(["text", "data", "uri", "none", "text"]))
    if content == "text":
        fields["text"] = draw(texts)
    elif content == "data":
        fields["data"] = base64.b64encode(draw(st.binary(max_size=64))).decode()
    elif content == "uri":
        fields["uri"] = draw(st.sampled_from(["file:///etc/passwd", "http://127.0.0.1:1/x.jpg", "s3://b/k", "nope"]))
    if draw(st.booleans()):
        fields["metadata"] = {"m": draw(json_values), "deep": nested(draw(st.sampled_from([1, 10, 70, 300])))}
    if draw(st.booleans()):
        fields["video"] = {"video_id": draw(st.text(max_size=8)), "index": draw(st.integers(-2, 5))}
    if draw(st.booleans()):
        fields["ts"] = draw(st.sampled_from(["2026-11-30T00:00:00Z", "not a time", "9999-12-31T23:59:59Z", 12]))
    return json.dumps(fields, allow_nan=True).encode("utf-8")


@st.composite
def record(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["bytes", "json", "json", "binary"]))
    headers = draw(st.lists(st.tuples(header_keys, st.binary(max_size=16)), max_size=3))
    if kind == "bytes":
        value: bytes | None = draw(st.none() | st.binary(max_size=120))
    elif kind == "json":
        value = draw(json_envelope())
    else:
        value = draw(st.binary(max_size=64))
        headers += [("es-id", b"placeholder"), ("es-modality", draw(st.sampled_from(MODALITIES)).encode())]
        headers += draw(
            st.lists(
                st.tuples(st.sampled_from(["es-metadata", "es-video", "es-ts", "es-mime"]), st.binary(max_size=24)),
                max_size=2,
            )
        )
    key = draw(st.none() | st.binary(max_size=12))
    if key is None and value is None:
        key = b"k"  # Kafka clients cannot send a record with neither (kafka-python refuses it)
    timestamp = draw(st.none() | st.integers(min_value=0, max_value=2**62))
    return {"key": key, "value": value, "headers": headers, "timestamp_ms": timestamp}


def with_unique_ids(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record its own id, so that two generated events never share a point."""
    out = []
    for i, rec in enumerate(records):
        rec = dict(rec)
        if rec["value"] is not None and b'"placeholder"' in rec["value"]:
            rec["value"] = rec["value"].replace(b'"placeholder"', f'"gen-{i}"'.encode())
        rec["headers"] = [(k, f"gen-{i}".encode() if k == "es-id" else v) for k, v in rec["headers"]]
        out.append(rec)
    return out


def makes_no_point(rec: dict[str, Any]) -> bool:
    """A valid video_end (it marks a video) or a deletion (a tombstone: a key and a null value)."""
    kafka = KafkaRecord(
        topic="t", partition=0, offset=0, key=rec["key"], value=rec["value"], headers=tuple(rec["headers"])
    )
    parsed = parse_event(kafka)
    return isinstance(parsed, Deletion) or (isinstance(parsed, Envelope) and parsed.modality is Modality.VIDEO_END)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(records=st.lists(record(), min_size=4, max_size=24))
def test_every_record_becomes_a_point_or_a_dead_letter(make_settings, media_models, records):
    settings_ = make_settings(kafka={"partitions": 1}, media={"roots": [], "decode_timeout_s": 5.0})
    ensure_topics(settings_.kafka, [settings_.kafka.topic])
    records = with_unique_ids(records)
    producer = KafkaProducer(bootstrap_servers=[settings_.kafka.bootstrap_servers], max_request_size=4 << 20)
    for rec in records:
        producer.send(settings_.kafka.topic, **rec)
    producer.flush()
    producer.close()

    run_ingest(settings_)

    store = open_store(settings_.qdrant)
    try:
        pointed = {p.payload["source"]["offset"] for p in store.scroll() if p.payload.get("modality") != "video"}
    finally:
        store.close()
    letters = read_topic(settings_, settings_.kafka.dead_letter_topic)
    dead = {int(DeadLetter.context_of(r.headers)["offset"]) for r in letters}
    ends = {i for i, rec in enumerate(records) if makes_no_point(rec)}
    everything = set(range(len(records)))
    assert pointed | dead | ends == everything, {"lost": sorted(everything - pointed - dead - ends)}
    assert not pointed & dead, {"both": sorted(pointed & dead)}
    assert len(letters) == len(dead)  # one dead letter each
    assert committed_offsets(settings_.kafka) == watermarks(settings_)
