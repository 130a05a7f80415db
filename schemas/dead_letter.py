"""Dead-letter records: errors are data, never an exception that escapes a transform.

On the wire a dead letter is the *original* Kafka message (same key, same value bytes, same headers) plus
``es-dlq-*`` context headers, the way Kafka Connect's ``errors.deadletterqueue.context.headers.enable``
does it. Keeping the value byte-for-byte means a fixed consumer (or ``embedstream`` DLQ replay) can
re-produce it without any decoding, and nothing about the failed event is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from embedstream.schemas.records import REPLAY_PREFIX, KafkaRecord

DLQ_HEADER_PREFIX = "es-dlq-"
REPLAY_HEADER_PREFIX = REPLAY_PREFIX
"""Headers ``dlq replay`` adds to a re-produced event: where it first entered Kafka (``topic``, ``partition``,
``offset``, ``ts``), so the point keeps its original position and an older replay cannot overwrite newer data."""
BY_REFERENCE = "by-reference"
"""``es-dlq-by-reference``: the dead letter carries no original bytes (they did not fit, or were no longer held);
its ``topic``/``partition``/``offset`` say where to read them while the source topic retains them."""


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
    DECODE_TIMEOUT = "decode_timeout"  # fetching or decoding took longer than media.decode_timeout_s
    STAGE_FAILED = "stage_failed"  # a stage raised on this event alone (an input no check foresaw, or a bug)
    STORE_REJECTED = "store_rejected"  # the store refused this point while it took the others of its batch
    SUPERSEDED = "superseded"  # a replayed event older than what the store already holds for its id
    SKIPPED = "skipped"  # the operator named this record in pipeline.skip (a way past a record that stops a run)


class DeadLetter(BaseModel):
    """An event that could not become a point, with the reason and a pointer back to its source."""

    model_config = ConfigDict(frozen=True)

    reason: Reason
    message: str
    stage: str
    source: KafkaRecord
    event_id: str | None = None
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    by_reference: bool = False

    @classmethod
    def of(
        cls, record: KafkaRecord, reason: Reason, message: str, stage: str, event_id: str | None = None
    ) -> DeadLetter:
        return cls(reason=reason, message=message, stage=stage, source=record, event_id=event_id)

    @classmethod
    def reference(
        cls, topic: str, partition: int, offset: int, reason: Reason, message: str, stage: str, event_id: str | None
    ) -> DeadLetter:
        """A dead letter that points at its record instead of carrying it (the bytes are no longer at hand)."""
        source = KafkaRecord(topic=topic, partition=partition, offset=offset)
        return cls(reason=reason, message=message, stage=stage, source=source, event_id=event_id, by_reference=True)

    def as_reference(self, why: str) -> DeadLetter:
        """This dead letter without the original key, value and headers (``why`` is added to the message)."""
        source = KafkaRecord(topic=self.source.topic, partition=self.source.partition, offset=self.source.offset)
        message = f"{self.message} [original bytes left out: {why}]"
        return self.model_copy(update={"source": source, "by_reference": True, "message": message})

    @property
    def identity(self) -> str:
        """The failed record's position: the same record dead-lettered twice (a crash between publishing and
        committing) is one dead letter."""
        return identity_of(
            {"topic": self.source.topic, "partition": self.source.partition, "offset": self.source.offset}
        )

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
        if self.by_reference:
            context[BY_REFERENCE] = "1"
        original = [(k, v) for k, v in self.source.headers if not k.startswith(DLQ_HEADER_PREFIX)]
        # 'replace': a message quoting undecodable input must not make the dead letter unpublishable
        return original + [(DLQ_HEADER_PREFIX + k, v.encode("utf-8", "replace")) for k, v in context.items()]

    @staticmethod
    def context_of(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> dict[str, str]:
        """Read the ``es-dlq-*`` context back from a dead-letter message's headers (for consumers, tests)."""
        return {
            k[len(DLQ_HEADER_PREFIX) :]: v.decode("utf-8", "replace")
            for k, v in headers
            if k.startswith(DLQ_HEADER_PREFIX)
        }


def identity_of(context: Mapping[str, object]) -> str:
    """A dead letter's identity: the failed record's ``topic/partition/offset`` (from ``DeadLetter.context_of``
    of a published one, or a dead letter's own source)."""
    return f"{context.get('topic')}/{context.get('partition')}/{context.get('offset')}"
