"""Dead-letter records: errors are data, never an exception that escapes a transform.

On the wire a dead letter is the *original* Kafka message (same key, same value bytes, same headers) plus
``es-dlq-*`` context headers, the way Kafka Connect's ``errors.deadletterqueue.context.headers.enable``
does it. Keeping the value byte-for-byte means a fixed consumer (or ``embedstream`` DLQ replay) can
re-produce it without any decoding, and nothing about the failed event is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from embedstream.schemas.records import KafkaRecord

DLQ_HEADER_PREFIX = "es-dlq-"


class Reason(StrEnum):
    """Why an event was dead-lettered. Stable codes: consumers of the dead-letter topic switch on them."""

    MALFORMED_JSON = "malformed_json"
    INVALID_UTF8 = "invalid_utf8"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    MISSING_FIELD = "missing_field"
    MISSING_HEADERS = "missing_headers"
    UNKNOWN_MODALITY = "unknown_modality"
    WRONG_CONTENT = "wrong_content"
    EMPTY_CONTENT = "empty_content"
    OVERSIZED = "oversized"
    BAD_BASE64 = "bad_base64"
    INVALID_FIELD = "invalid_field"
    UNSUPPORTED_MODALITY = "unsupported_modality"
    ENCODE_FAILED = "encode_failed"
    VECTOR_WRONG_DIM = "vector_wrong_dim"
    VECTOR_NON_FINITE = "vector_non_finite"
    VECTOR_ZERO_NORM = "vector_zero_norm"
    UNDECODABLE = "undecodable"  # bytes that are not a picture / sound the decoders read (or are truncated)
    SILENT = "silent"  # a sound with nothing above the silence floor
    TOO_SHORT = "too_short"  # a sound shorter than media.min_audio_seconds (after trimming silence)
    URI_NOT_ALLOWED = "uri_not_allowed"  # file:// outside the configured roots, or a remote scheme not enabled
    FETCH_FAILED = "fetch_failed"  # the URI could not be read


class DeadLetter(BaseModel):
    """An event that could not become a point, with the reason and a pointer back to its source."""

    model_config = ConfigDict(frozen=True)

    reason: Reason
    message: str
    stage: str
    source: KafkaRecord
    event_id: str | None = None
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(
        cls, record: KafkaRecord, reason: Reason, message: str, stage: str, event_id: str | None = None
    ) -> DeadLetter:
        return cls(reason=reason, message=message, stage=stage, source=record, event_id=event_id)

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The original headers followed by the ``es-dlq-*`` context headers."""
        context = {
            "reason": self.reason.value,
            "message": self.message,
            "stage": self.stage,
            "topic": self.source.topic,
            "partition": str(self.source.partition),
            "offset": str(self.source.offset),
            "failed-at": self.failed_at.isoformat(),
        }
        if self.event_id is not None:
            context["event-id"] = self.event_id
        original = [(k, v) for k, v in self.source.headers if not k.startswith(DLQ_HEADER_PREFIX)]
        return original + [(DLQ_HEADER_PREFIX + k, v.encode()) for k, v in context.items()]

    @staticmethod
    def context_of(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> dict[str, str]:
        """Read the ``es-dlq-*`` context back from a dead-letter message's headers (for consumers, tests)."""
        return {k[len(DLQ_HEADER_PREFIX) :]: v.decode() for k, v in headers if k.startswith(DLQ_HEADER_PREFIX)}
