"""The v1 event envelope and the one function that turns a Kafka record into an envelope, a deletion or a rejection.

Two wire forms carry the same envelope (docs/contracts.md):

* JSON: the Kafka value is a JSON object; binary content rides base64-encoded in ``data``.
* Binary: the Kafka value is the raw content bytes and the envelope fields ride in ``es-`` headers
  (``es-id``, ``es-modality``, optional ``es-schema``, ``es-mime``, ``es-ts``, ``es-uri``, and JSON objects in
  ``es-video`` / ``es-metadata``). No base64 cost for images, audio and frames.

``"op": "delete"`` (header ``es-op: delete``, no content) and a Kafka tombstone (a key, a null value) are
``Deletion``s: they remove what the id made.

``parse_event`` never raises on bad input: it returns a ``Rejection`` carrying a stable ``Reason`` code and
a message that names the field and the offending value, so the pipeline can dead-letter it and move on.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from embedstream.schemas import strict_json
from embedstream.schemas.dead_letter import DLQ_HEADER_PREFIX, REPLAY_HEADER_PREFIX, Reason
from embedstream.schemas.defaults import MAX_EVENT_BYTES, MAX_TEXT_CHARS
from embedstream.schemas.point import point_id
from embedstream.schemas.records import KafkaRecord
from embedstream.schemas.version import MAX_DECLARED

SCHEMA_VERSION = 1
HEADER_PREFIX = "es-"


class Modality(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO_FRAME = "video_frame"
    VIDEO_AUDIO = "video_audio"
    VIDEO_END = "video_end"


CONTENT_FIELDS = ("text", "data", "uri")
ALLOWED_CONTENT: dict[Modality, frozenset[str]] = {
    Modality.TEXT: frozenset({"text"}),
    Modality.IMAGE: frozenset({"data", "uri"}),
    Modality.AUDIO: frozenset({"data", "uri"}),
    Modality.VIDEO_FRAME: frozenset({"data", "uri"}),
    Modality.VIDEO_AUDIO: frozenset({"data", "uri"}),
    Modality.VIDEO_END: frozenset(),
}
VIDEO_MODALITIES = frozenset({Modality.VIDEO_FRAME, Modality.VIDEO_AUDIO, Modality.VIDEO_END})
SINGLE_MODALITIES = (Modality.TEXT, Modality.IMAGE, Modality.AUDIO)  # one point per event id


MAX_ID_CHARS = 512


@dataclass(frozen=True)
class Limits:
    """Size limits applied while validating. Over a limit is a dead letter (``oversized``), never a crash."""

    max_event_bytes: int = MAX_EVENT_BYTES
    max_text_chars: int = MAX_TEXT_CHARS


class VideoRef(BaseModel):
    """Where a frame or audio segment sits in its video."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    video_id: str = Field(min_length=1, max_length=512)
    index: int | None = Field(default=None, ge=0)
    t: float | None = Field(default=None, ge=0)
    duration: float | None = Field(default=None, gt=0)


class Envelope(BaseModel):
    """One event, schema v1. Exactly one content field fits the modality (none for ``video_end``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_version: Literal[1] = Field(alias="schema")
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    modality: Modality
    text: str | None = None
    data: bytes | None = None
    uri: str | None = Field(default=None, min_length=1, max_length=4096)
    mime: str | None = Field(default=None, max_length=255)
    ts: datetime | None = None
    video: VideoRef | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    op: Literal["upsert", "delete"] = "upsert"
    # The event's version for its id (docs/contracts.md "Versions"): an integer the producer guarantees grows per
    # id. Absent, the record's Kafka timestamp stands in. Send it for every event of an id, or for none.
    version: int | None = Field(default=None, ge=0, le=MAX_DECLARED)

    @field_validator("data", mode="before")
    @classmethod
    def _decode_base64(cls, value: object) -> object:
        """JSON carries ``data`` as base64 text; the binary form hands raw bytes straight through."""
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise PydanticCustomError(
                    Reason.BAD_BASE64.value, "field 'data' is not valid base64: {error}", {"error": str(exc)}
                ) from exc
        return value

    @model_validator(mode="after")
    def _content_fits_modality(self, info: ValidationInfo) -> Envelope:
        limits = (info.context or {}).get("limits", Limits())
        present = [name for name in CONTENT_FIELDS if getattr(self, name) is not None]
        allowed = ALLOWED_CONTENT[self.modality]
        if self.op == "delete":
            if present:
                raise _custom(Reason.WRONG_CONTENT, f"a delete carries no content, got {present}")
            return self
        if self.modality is Modality.VIDEO_END:
            if present:
                raise _custom(Reason.WRONG_CONTENT, f"modality 'video_end' carries no content, got {present}")
        elif len(present) != 1 or present[0] not in allowed:
            raise _custom(
                Reason.WRONG_CONTENT,
                f"modality {self.modality.value!r} needs exactly one of {sorted(allowed)}, got {present or 'none'}",
            )
        if self.modality in VIDEO_MODALITIES and self.video is None:
            raise _custom(Reason.MISSING_FIELD, f"modality {self.modality.value!r} needs field 'video'")
        if self.text is not None:
            if not self.text.strip():
                raise _custom(Reason.EMPTY_CONTENT, "field 'text' is empty or only whitespace")
            if len(self.text) > limits.max_text_chars:
                raise _custom(
                    Reason.OVERSIZED,
                    f"field 'text' has {len(self.text)} characters, over the limit of {limits.max_text_chars}",
                )
        if self.data is not None and not self.data:
            raise _custom(Reason.EMPTY_CONTENT, "field 'data' is empty")
        return self

    @property
    def video_id(self) -> str | None:
        return self.video.video_id if self.video else None


@dataclass(frozen=True)
class Deletion:
    """Remove what an event id made. ``modality`` None (a Kafka tombstone: a key with a null value) removes
    the id's points of every modality; a video modality removes the whole video whose id it is (its frames,
    audio segments and view); a text removes the document with its chunks. The one statement of that rule is
    ``_owned`` + ``_belonging``: ``covers`` tests a payload against it, ``targets`` gives it to a store."""

    id: str
    modality: Modality | None = None
    version: int | None = None  # the delete event's declared version (a Kafka tombstone has none)

    @property
    def whole_video(self) -> bool:
        return self.modality is None or self.modality in VIDEO_MODALITIES

    def _owned(self) -> list[str]:
        """The modalities whose point of this id (``point_id(modality, id)``) goes."""
        if self.modality is None:
            return [m.value for m in SINGLE_MODALITIES]
        return [] if self.modality in VIDEO_MODALITIES else [self.modality.value]

    def _belonging(self) -> list[dict[str, str]]:
        """Payload matches of the points that belong to the id: a video's members and view, a document's chunks."""
        matches = [{"video_id": self.id}] if self.whole_video else []
        if self.modality in (None, Modality.TEXT):
            matches.append({"doc_id": self.id})
        return matches

    def covers(self, payload: Mapping[str, Any]) -> bool:
        """Does a point with this payload belong to what is deleted?"""
        if any(payload.get(key) == value for match in self._belonging() for key, value in match.items()):
            return True
        return payload.get("id") == self.id and payload.get("modality") in self._owned()

    def targets(self) -> tuple[list[str], list[dict[str, str]]]:
        """What ``covers`` covers, as a store deletes it: point ids, and payload matches."""
        return [point_id(modality, self.id) for modality in self._owned()], self._belonging()


@dataclass(frozen=True)
class Rejection:
    """Why a record is not a valid envelope; becomes a dead letter."""

    reason: Reason
    message: str
    event_id: str | None = None


def _custom(reason: Reason, message: str) -> PydanticCustomError:
    # Braces in user text would be read as template fields; pass the text as a context value instead.
    return PydanticCustomError(reason.value, "{detail}", {"detail": message})


_REASON_CODES = {r.value for r in Reason}
# When a record has several problems the most fundamental one names it.
_PRIORITY = [
    Reason.MALFORMED_JSON,
    Reason.UNSUPPORTED_SCHEMA,
    Reason.UNKNOWN_MODALITY,
    Reason.MISSING_FIELD,
    Reason.BAD_BASE64,
    Reason.WRONG_CONTENT,
    Reason.EMPTY_CONTENT,
    Reason.OVERSIZED,
    Reason.INVALID_FIELD,
]


def _reason_of(error: Any) -> Reason:
    kind = error["type"]
    loc = error["loc"]
    if kind in _REASON_CODES:
        return Reason(kind)
    if kind == "missing":
        return Reason.MISSING_FIELD
    if loc and loc[0] == "schema":
        return Reason.UNSUPPORTED_SCHEMA
    if loc and loc[0] == "modality":
        return Reason.UNKNOWN_MODALITY
    if kind in ("model_type", "model_attributes_type"):
        return Reason.MALFORMED_JSON
    return Reason.INVALID_FIELD


def _describe(error: Any) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "event"
    if error["type"] in _REASON_CODES:
        return str(error["msg"])
    if error["type"] == "missing":
        return f"field {field!r} is required"
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"field {field!r}: {error['msg']} (got {shown})"


def validate_fields(fields: dict[str, Any], limits: Limits) -> Envelope | Rejection:
    """Validate an already-decoded field mapping (JSON object or headers) into an envelope."""
    event_id = fields.get("id") if isinstance(fields.get("id"), str) else None
    try:
        return Envelope.model_validate(fields, context={"limits": limits})
    except ValidationError as exc:
        errors = exc.errors()
        reasons = [_reason_of(e) for e in errors]
        best = min(range(len(errors)), key=lambda i: _PRIORITY.index(reasons[i]))
        return Rejection(reasons[best], _describe(errors[best]), event_id)


def _from_json(value: bytes, limits: Limits) -> Envelope | Rejection:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.INVALID_UTF8, f"value is not valid UTF-8: {exc.reason} at byte {exc.start}")
    try:
        fields = strict_json.loads(text)
    except strict_json.JsonRefused as exc:
        return _refused(exc, "value", _id_of(text))
    except ValueError as exc:
        return Rejection(Reason.MALFORMED_JSON, f"value is not JSON: {exc}")
    if not isinstance(fields, dict):
        return Rejection(Reason.MALFORMED_JSON, f"value is JSON but not an object (a {type(fields).__name__})")
    return validate_fields(fields, limits)


def _refused(exc: strict_json.JsonRefused, where: str, event_id: str | None) -> Rejection:
    reason = {"malformed": Reason.MALFORMED_JSON, "unicode": Reason.INVALID_UTF8}.get(exc.kind, Reason.INVALID_FIELD)
    return Rejection(reason, f"{where}: {exc}", event_id)


def _id_of(text: str) -> str | None:
    """The event id of a refused JSON value, when a plain parse can still read it (for the dead letter)."""
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        return None
    found = fields.get("id") if isinstance(fields, dict) else None
    if isinstance(found, str) and not strict_json.has_surrogate(found):
        return found
    return None


def _is_envelope_header(key: str) -> bool:
    return key.startswith(HEADER_PREFIX) and not key.startswith((DLQ_HEADER_PREFIX, REPLAY_HEADER_PREFIX))


def is_binary_form(record: KafkaRecord) -> bool:
    return any(_is_envelope_header(k) for k, _ in record.headers)


def _from_headers(record: KafkaRecord, limits: Limits) -> Envelope | Rejection:
    headers: dict[str, str] = {}
    for key, raw in record.headers:
        if _is_envelope_header(key):
            try:
                headers[key[len(HEADER_PREFIX) :]] = raw.decode("utf-8")
            except UnicodeDecodeError:
                return Rejection(Reason.INVALID_UTF8, f"header {key!r} is not valid UTF-8")
    missing = [f"es-{name}" for name in ("id", "modality") if name not in headers]
    if missing:
        return Rejection(Reason.MISSING_HEADERS, f"binary event lacks header(s) {missing}", headers.get("id"))
    fields: dict[str, Any] = {"schema": headers.get("schema", str(SCHEMA_VERSION))}
    if _small_number(fields["schema"]):  # anything else stays text, which the schema refuses by name
        fields["schema"] = int(fields["schema"])
    for name in ("id", "modality", "mime", "ts", "uri", "op", "version"):
        if name in headers:
            fields[name] = headers[name]
    for name in ("video", "metadata"):
        if name in headers:
            try:
                fields[name] = strict_json.loads(headers[name])
            except strict_json.JsonRefused as exc:
                return _refused(exc, f"header 'es-{name}'", headers["id"])
            except ValueError as exc:
                return Rejection(Reason.MALFORMED_JSON, f"header 'es-{name}' is not JSON: {exc}", headers["id"])
    value = record.value or b""
    if value:
        if headers["modality"] == Modality.TEXT.value:
            try:
                fields["text"] = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Rejection(
                    Reason.INVALID_UTF8, f"text value is not valid UTF-8 at byte {exc.start}", headers["id"]
                )
        else:
            fields["data"] = value
    return validate_fields(fields, limits)


def parse_event(record: KafkaRecord, limits: Limits | None = None) -> Envelope | Deletion | Rejection:
    """Decode one Kafka record (either wire form) into a validated envelope, a deletion, or say why not.

    A deletion is an event with ``"op": "delete"`` (header ``es-op``), or a Kafka tombstone: a record with a key
    and a null value (the key is the event id; an ``es-version`` header, its only other header, is its version).
    An empty value that is not null stays a dead letter.
    ``ts`` defaults to the Kafka record timestamp.
    """
    limits = limits or Limits()
    fields = {key for key, _ in record.headers if _is_envelope_header(key)}
    if record.value is None and fields <= {f"{HEADER_PREFIX}version"}:  # a tombstone may say its version
        return _tombstone(record.key, _declared_version(record))
    result = _parsed(record, limits)
    if isinstance(result, Envelope) and result.op == "delete":
        return Deletion(result.id, result.modality, result.version)
    return result


def _small_number(text: str) -> bool:
    """ASCII digits short enough for ``int`` (``str.isdigit`` also takes "²", and ``int`` refuses 4,301 digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 16


def _declared_version(record: KafkaRecord) -> int | Rejection | None:
    """A Kafka tombstone's ``es-version`` header (its only way to carry a declared version), or why it cannot be
    read: a delete whose version is lost would quietly fall back to the record timestamp and lose to older data."""
    raw = next((value for key, value in record.headers if key == f"{HEADER_PREFIX}version"), None)
    if raw is None:
        return None
    text = raw.decode("ascii", "replace")
    if not (_small_number(text) and int(text) <= MAX_DECLARED):
        return Rejection(Reason.INVALID_FIELD, f"header 'es-version' is not an integer from 0 to {MAX_DECLARED}")
    return int(text)


def _tombstone(key: bytes | None, version: int | Rejection | None = None) -> Deletion | Rejection:
    if not key:
        return Rejection(Reason.MALFORMED_JSON, "value is null and the key is empty: a tombstone for no event id")
    try:
        event_id = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.INVALID_UTF8, f"tombstone key is not valid UTF-8 at byte {exc.start}")
    if strict_json.has_surrogate(event_id) or len(event_id) > MAX_ID_CHARS:
        return Rejection(Reason.INVALID_FIELD, f"tombstone key is not a valid event id (1-{MAX_ID_CHARS} characters)")
    if isinstance(version, Rejection):
        return Rejection(version.reason, version.message, event_id)
    return Deletion(event_id, version=version)


def _parsed(record: KafkaRecord, limits: Limits) -> Envelope | Rejection:
    if record.value is not None and len(record.value) > limits.max_event_bytes:
        return Rejection(
            Reason.OVERSIZED,
            f"value has {len(record.value)} bytes, over the limit of {limits.max_event_bytes}",
        )
    if is_binary_form(record):
        result = _from_headers(record, limits)
    elif not record.value:
        return Rejection(Reason.MALFORMED_JSON, "value is empty and carries no es- headers")
    else:
        result = _from_json(record.value, limits)
    if isinstance(result, Envelope) and result.ts is None and record.timestamp_ms is not None:
        try:
            ts = datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            return result  # a record timestamp past year 9999: the event keeps no ts rather than failing
        result = result.model_copy(update={"ts": ts})
    return result


def envelope_to_json(envelope: Envelope) -> bytes:
    """The JSON wire form of an envelope (``data`` base64-encoded), as producers send it."""
    fields = envelope.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"data"})
    if envelope.data is not None:
        fields["data"] = base64.b64encode(envelope.data).decode("ascii")
    if not fields.get("metadata"):
        fields.pop("metadata", None)
    if fields.get("op") == "upsert":
        fields.pop("op")  # the default: the wire form stays what producers of schema 1 send
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def envelope_to_binary(envelope: Envelope) -> tuple[list[tuple[str, bytes]], bytes]:
    """The binary wire form: ``es-*`` headers + the raw content as the value (no base64 for media bytes)."""
    headers = [
        ("es-schema", str(envelope.schema_version).encode()),
        ("es-id", envelope.id.encode("utf-8")),
        ("es-modality", envelope.modality.value.encode()),
    ]
    for name in ("mime", "uri"):
        value = getattr(envelope, name)
        if value is not None:
            headers.append((f"es-{name}", value.encode("utf-8")))
    if envelope.ts is not None:
        headers.append(("es-ts", envelope.ts.isoformat().encode()))
    if envelope.video is not None:
        headers.append(("es-video", envelope.video.model_dump_json(exclude_none=True).encode("utf-8")))
    if envelope.op != "upsert":
        headers.append(("es-op", envelope.op.encode()))
    if envelope.version is not None:
        headers.append(("es-version", str(envelope.version).encode()))
    if envelope.metadata:
        headers.append(("es-metadata", json.dumps(envelope.metadata, ensure_ascii=False).encode("utf-8")))
    if envelope.text is not None:
        return headers, envelope.text.encode("utf-8")
    return headers, envelope.data or b""
