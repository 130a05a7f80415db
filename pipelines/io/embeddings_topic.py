"""Publish what a bundle wrote to the embeddings topic (``pipeline.output_topic``), acknowledged before commit.

``Deliver`` hands each bundle's settled changes (``bundle_changes``) to ``publish`` and calls ``confirm`` before
the bundle ends; the Kafka read commits offsets only after that. So a crash between the store write and the
commit never commits an input whose record is not on the topic: the input is read again, written again (the
same version, which the store takes again) and published again — a duplicate with the same key and version,
which a compacted topic or a newest-version-wins consumer absorbs.

The producer keeps one request in flight per broker so a retried send cannot overtake a later one of the same
key. Records the broker refuses (it is down, restarting) are sent again with backoff, the bundle waiting, as
dead letters are; what it has not taken after ``pipeline.dead_letter_retry_s`` fails the bundle with
``OutputTopicUnavailableError``: nothing of it is committed, and a rerun writes and publishes it again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from embedstream.pipelines.io.dead_letter_publisher import RETRY_FIRST_S, RETRY_MAX_S, SEND_TIMEOUT_S
from embedstream.pipelines.io.kafka_clients import output_limit, producer
from embedstream.pipelines.observability import INGEST
from embedstream.schemas.embeddings_wire import EmbeddingRecord, OutputFormat, encode, headers_of
from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import KafkaSettings, PipelineSettings

_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
BATCH_BYTES = 1 << 20  # a bundle's records go in few large produce requests
log = logging.getLogger(__name__)


class OutputTopicUnavailableError(EmbedstreamError):
    """The embeddings topic did not acknowledge a bundle's records in time."""


class EmbeddingsTopic:
    """Sends each settled change now and waits for them all in ``confirm``."""

    def __init__(self, kafka: KafkaSettings, pipeline: PipelineSettings) -> None:
        assert pipeline.output_topic is not None, "an EmbeddingsTopic needs pipeline.output_topic"
        self._topic = pipeline.output_topic
        self._format: OutputFormat = pipeline.output_format
        self._wait_s = pipeline.dead_letter_retry_s
        self._max_event_bytes = pipeline.max_event_bytes
        self._producer = producer(
            kafka,
            output_limit(pipeline.max_event_bytes),
            batch_size=BATCH_BYTES,
            max_in_flight_requests_per_connection=1,
        )
        self._sends: list[tuple[EmbeddingRecord, Any]] = []

    def close(self) -> None:
        self._producer.close()

    def publish(self, changes: list[EmbeddingRecord]) -> None:
        self._sends += [(change, self._send(change)) for change in changes]

    def publish_now(self, changes: list[EmbeddingRecord]) -> None:
        """Publish and wait for these (removals that must be on the topic before the store forgets them), after
        what was sent before them."""
        self.publish(changes)
        self.confirm()

    def discard(self) -> None:
        """Forget sends a failed bundle left unconfirmed (its retry sends them again, in order)."""
        self._sends = []

    def _send(self, change: EmbeddingRecord) -> Any:
        value = None if change.deleted else encode(change, self._format)
        headers = headers_of(change.version, self._format)
        return self._producer.send(self._topic, key=change.id.encode(), value=value, headers=headers)

    def confirm(self) -> int:
        """Wait until the broker has every record sent so far; how many there were. Records it refused are sent
        again with backoff (a broker restart, a leader moving) for up to ``pipeline.dead_letter_retry_s``."""
        done: list[EmbeddingRecord] = []
        started, delay = time.monotonic(), RETRY_FIRST_S
        while self._sends:
            self._producer.flush()
            failed: list[tuple[EmbeddingRecord, KafkaError]] = []
            for change, future in self._sends:
                try:
                    future.get(timeout=SEND_TIMEOUT_S)
                    done.append(change)
                except _TOO_LARGE as exc:  # a topic made elsewhere with a smaller limit: no retry will pass
                    raise OutputTopicUnavailableError(
                        f"the embeddings topic {self._topic} refused the record of point {change.id} as too large "
                        f"({exc}); raise the topic's max.message.bytes to {output_limit(self._max_event_bytes)}"
                    ) from exc
                except KafkaError as exc:
                    failed.append((change, exc))
            self._sends = []
            if failed:
                change, error = failed[-1]
                waited = time.monotonic() - started
                if waited + delay > self._wait_s:
                    raise OutputTopicUnavailableError(
                        f"the embeddings topic {self._topic} did not take {len(failed)} records in {waited:.0f} s "
                        f"(point {change.id}: {type(error).__name__}: {error}); nothing of this bundle is "
                        "committed, so a rerun writes and publishes them again"
                    )
                log.warning(
                    "the embeddings topic %s did not take %d records (%s); sending them again in %.0f s",
                    self._topic,
                    len(failed),
                    error,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._sends = [(change, self._send(change)) for change, _ in failed]
        for kind, deleted in (("point", False), ("delete", True)):
            count = sum(1 for change in done if change.deleted == deleted)
            if count:
                INGEST.output_records.labels(kind).inc(count)
        return len(done)
