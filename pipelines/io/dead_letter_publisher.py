"""Publish dead letters to the dead-letter topic, confirmed by the broker before the bundle ends.

Each dead letter is the original message (key, value bytes, headers) plus ``es-dlq-*`` context headers.
``confirm`` flushes the producer and checks every send, so a dead letter the broker did not take fails the
bundle, and the bundle's offsets are not committed (see ``kafka_read``).

A dead letter must never be the thing that stops the pipeline, so what the topic cannot take is published
*by reference* instead (``es-dlq-by-reference``: no key, value or original headers; its ``topic``,
``partition`` and ``offset`` say where the bytes are while the source topic retains them):

* a record larger than the producer's limit (the event limit plus header room) — an ``oversized`` event can be;
* one the broker refuses as too large (a dead-letter topic created elsewhere with a smaller
  ``max.message.bytes``);
* a record with neither key nor value (Kafka clients cannot send one): its value is sent empty, with
  ``es-dlq-null-value``.

Anything else the broker refuses (it is down, the topic is gone, we may not write) is an outage, not a property
of the record: those dead letters are sent again with backoff for up to ``pipeline.dead_letter_retry_s``, the
bundle waiting (back-pressure, nothing read meanwhile). If the topic still does not take them, the bundle fails
with ``DeadLetterUnavailableError`` and none of its offsets are committed, so a rerun reads those records again:
no invalid event is dropped silently. A dead letter whose acknowledgement was lost may be published twice.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka.errors import KafkaError

from embedstream.pipelines.io.acked_sends import AckedSends
from embedstream.pipelines.io.kafka_clients import dead_letter_limit, producer
from embedstream.schemas.dead_letter import DLQ_HEADER_PREFIX, DeadLetter
from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import KafkaSettings, PipelineSettings

log = logging.getLogger(__name__)
NULL_VALUE = DLQ_HEADER_PREFIX + "null-value"


class DeadLetterUnavailableError(EmbedstreamError):
    """The dead-letter topic did not take dead letters within ``pipeline.dead_letter_retry_s``."""


def wire_size(dead: DeadLetter) -> int:
    """Bytes the dead letter takes in a produce request (key + value + headers, before batch overhead)."""
    source = dead.source
    return len(source.key or b"") + len(source.value or b"") + sum(len(k) + len(v) for k, v in dead.kafka_headers())


class DeadLetterPublisher:
    """Sends dead letters now and confirms them all in ``confirm`` (call it before the bundle's offsets move)."""

    def __init__(self, kafka: KafkaSettings, pipeline: PipelineSettings) -> None:
        self._topic = kafka.dead_letter_topic
        self._limit = dead_letter_limit(pipeline.max_event_bytes)
        self._producer = producer(kafka, self._limit)
        self._sends = AckedSends(
            self._producer.flush, self._send, pipeline.dead_letter_retry_s, "dead letters", _by_reference, self._gone
        )

    def close(self) -> None:
        self._producer.close()

    def publish(self, dead: DeadLetter) -> None:
        size = wire_size(dead)
        if size > self._limit:
            dead = dead.as_reference(f"{size} bytes exceed the dead-letter limit of {self._limit}")
        self._sends.send(dead)

    def _send(self, dead: DeadLetter) -> Any:
        source, headers = dead.source, dead.kafka_headers()
        value = source.value
        if source.key is None and value is None:
            value, headers = b"", [*headers, (NULL_VALUE, b"1")]
        # The original timestamp travels with it: a replay re-produces the event as it was.
        return self._producer.send(
            self._topic, key=source.key, value=value, headers=headers, timestamp_ms=source.timestamp_ms
        )

    def confirm(self) -> list[DeadLetter]:
        """Wait until the broker has every dead letter sent so far; return them. Too large for the topic: sent
        again by reference at once. Refused otherwise (an outage): sent again with backoff; after
        ``pipeline.dead_letter_retry_s`` raises ``DeadLetterUnavailableError`` (``acked_sends``)."""
        return self._sends.confirm()

    def _gone(self, count: int, waited_s: float, error: KafkaError) -> DeadLetterUnavailableError:
        return DeadLetterUnavailableError(
            f"the dead-letter topic {self._topic} did not take {count} dead letters in {waited_s:.0f} s "
            f"({type(error).__name__}: {error}); nothing of this bundle is committed, so a rerun sends them again "
            "(pipeline.dead_letter_retry_s sets how long to wait)"
        )


def _by_reference(dead: DeadLetter, error: KafkaError) -> DeadLetter:
    """A dead letter the topic refused as too large, sent again without its bytes (once: a reference is small)."""
    if dead.by_reference:
        raise error
    log.warning("a dead letter too large for its topic (%s): publishing it by reference", error)
    return dead.as_reference(f"the dead-letter topic refused its size ({error})")
