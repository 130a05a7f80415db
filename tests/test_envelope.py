"""The v1 envelope: every way an event can be wrong has its own reason code and a message naming the field."""

from __future__ import annotations

import base64
import json

import pytest

from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.envelope import Envelope, Limits, Modality, Rejection, envelope_to_json, parse_event
from embedstream.schemas.point import point_id, point_key
from embedstream.schemas.records import KafkaRecord

pytestmark = pytest.mark.unit


def record(value: bytes | None, headers: tuple[tuple[str, bytes], ...] = (), ts: int | None = None) -> KafkaRecord:
    return KafkaRecord(topic="events", partition=2, offset=41, value=value, headers=headers, timestamp_ms=ts)


def event(**fields) -> bytes:
    return json.dumps({"schema": 1, "id": "doc-1", **fields}).encode()


@pytest.mark.parametrize(
    ("value", "headers", "reason", "needle"),
    [
        (b"{nope", (), Reason.MALFORMED_JSON, "not JSON"),
        (b'"just a string"', (), Reason.MALFORMED_JSON, "not an object"),
        (None, (), Reason.MALFORMED_JSON, "empty"),
        (b'{"schema": 1, "id": "x", "modality": "text", "text": "caf\xe9"}', (), Reason.INVALID_UTF8, "UTF-8"),
        (event(schema=3, modality="text", text="hi"), (), Reason.UNSUPPORTED_SCHEMA, "'schema'"),
        (b'{"schema": 1, "modality": "text", "text": "hi"}', (), Reason.MISSING_FIELD, "'id'"),
        (event(modality="hologram", text="hi"), (), Reason.UNKNOWN_MODALITY, "'hologram'"),
        (event(modality="text", uri="s3://b/k"), (), Reason.WRONG_CONTENT, "'text'"),
        (event(modality="image", text="a cat"), (), Reason.WRONG_CONTENT, "['data', 'uri']"),
        (event(modality="image", data="aGk=", uri="s3://b/k"), (), Reason.WRONG_CONTENT, "exactly one"),
        (event(modality="video_end", video={"video_id": "v"}, text="x"), (), Reason.WRONG_CONTENT, "no content"),
        (event(modality="video_frame", data="aGk="), (), Reason.MISSING_FIELD, "'video'"),
        (event(modality="text", text=""), (), Reason.EMPTY_CONTENT, "'text'"),
        (event(modality="text", text="x" * 101), (), Reason.OVERSIZED, "101 characters"),
        (event(modality="image", data="%%%"), (), Reason.BAD_BASE64, "base64"),
        (event(modality="text", text="hi", colour="red"), (), Reason.INVALID_FIELD, "'colour'"),
        (event(modality="text", text="hi", ts="yesterday"), (), Reason.INVALID_FIELD, "'ts'"),
        (b"raw", (("es-modality", b"text"),), Reason.MISSING_HEADERS, "es-id"),
        (b"\xff", (("es-id", b"b1"), ("es-modality", b"text")), Reason.INVALID_UTF8, "UTF-8"),
        (
            b"x",
            (("es-id", b"b1"), ("es-modality", b"text"), ("es-metadata", b"{bad")),
            Reason.MALFORMED_JSON,
            "es-metadata",
        ),
    ],
)
def test_rejections_name_reason_and_field(value, headers, reason, needle):
    result = parse_event(record(value, headers), Limits(max_text_chars=100))
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert needle in result.message


def test_oversized_value_is_rejected_before_parsing():
    result = parse_event(record(b"x" * 2000), Limits(max_event_bytes=1000))
    assert isinstance(result, Rejection) and result.reason is Reason.OVERSIZED


def test_rejection_keeps_event_id_when_known():
    result = parse_event(record(event(modality="text", text="   ")))
    assert isinstance(result, Rejection) and result.event_id == "doc-1"


def test_valid_json_text_event_and_ts_default_from_kafka():
    result = parse_event(record(event(modality="text", text="hello", metadata={"k": [1, 2]}), ts=1_700_000_000_000))
    assert isinstance(result, Envelope)
    assert result.modality is Modality.TEXT and result.text == "hello" and result.metadata == {"k": [1, 2]}
    assert result.ts is not None and int(result.ts.timestamp()) == 1_700_000_000


def test_binary_form_carries_raw_bytes_without_base64():
    payload = bytes(range(256))
    headers = (
        ("es-id", b"img-7"),
        ("es-modality", b"image"),
        ("es-mime", b"image/png"),
        ("es-metadata", b'{"camera": "a"}'),
    )
    result = parse_event(record(payload, headers))
    assert isinstance(result, Envelope)
    assert result.data == payload and result.mime == "image/png" and result.metadata == {"camera": "a"}


def test_binary_video_frame_with_video_header():
    headers = (("es-id", b"f1"), ("es-modality", b"video_frame"), ("es-video", b'{"video_id": "v1", "index": 3}'))
    result = parse_event(record(b"\x00\x01", headers))
    assert isinstance(result, Envelope) and result.video_id == "v1"
    assert result.video is not None and result.video.index == 3


def test_json_round_trip_with_base64_data():
    original = Envelope.model_validate(
        {"schema": 1, "id": "a", "modality": "audio", "data": base64.b64encode(b"\x00wav").decode()}
    )
    again = parse_event(record(envelope_to_json(original)))
    assert isinstance(again, Envelope) and again.data == b"\x00wav"


def test_point_ids_are_deterministic_and_follow_the_design():
    assert point_id("text", "doc-42") == point_id("text", "doc-42")
    assert point_id("text", "doc-42") != point_id("image", "doc-42")
    assert point_key("video_frame", "ignored", "v1", 12) == "video_frame/v1/12"
    assert point_key("text", "doc-42") == "text/doc-42"


def test_dead_letter_headers_round_trip():
    source = record(b"{bad", (("trace", b"1"),))
    dead = DeadLetter.of(source, Reason.MALFORMED_JSON, "value is not JSON", "parse")
    context = DeadLetter.context_of(dead.kafka_headers())
    assert context["reason"] == "malformed_json" and context["offset"] == "41" and context["partition"] == "2"
    assert ("trace", b"1") in dead.kafka_headers()


def test_a_version_travels_in_both_wire_forms_and_on_a_kafka_tombstone():
    from embedstream.schemas.envelope import Deletion, envelope_to_binary
    from embedstream.schemas.version import Version

    json_form = parse_event(
        record(json.dumps({"schema": 1, "id": "a", "modality": "text", "text": "x", "version": 7}).encode())
    )
    assert isinstance(json_form, Envelope) and json_form.version == 7
    headers, value = envelope_to_binary(json_form)
    binary = parse_event(record(value, tuple(headers)))
    assert isinstance(binary, Envelope) and binary.version == 7
    too_big = parse_event(
        record(json.dumps({"schema": 1, "id": "a", "modality": "text", "text": "x", "version": 2**53}).encode())
    )
    assert isinstance(too_big, Rejection) and too_big.reason is Reason.INVALID_FIELD
    keyed = KafkaRecord(topic="events", partition=2, offset=41, key=b"a", value=None, timestamp_ms=1000)
    assert parse_event(keyed) == Deletion("a")
    stamped = keyed.model_copy(update={"headers": (("es-version", b"9"),)})
    assert parse_event(stamped) == Deletion("a", version=9)
    unreadable = parse_event(keyed.model_copy(update={"headers": (("es-version", "²".encode()),)}))
    assert isinstance(unreadable, Rejection) and unreadable.reason is Reason.INVALID_FIELD  # never a silent fallback
    assert Version.of(keyed, None) == Version(1000, (2 << 40) | 41) and Version.of(keyed, 9) == Version(
        9, (2 << 40) | 41
    )


@pytest.mark.parametrize("schema", ["²", "9" * 5000, "٣", "-1", "1.0"])
def test_an_es_schema_header_that_is_no_small_number_is_an_unsupported_schema(schema):
    headers = (("es-schema", schema.encode()), ("es-id", b"a"), ("es-modality", b"text"))
    result = parse_event(record(b"hi", headers))
    assert isinstance(result, Rejection) and result.reason is Reason.UNSUPPORTED_SCHEMA, result
