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

from typing import Any

from kafka.errors import KafkaError

from embedstream.pipelines.io.acked_sends import AckedSends
from embedstream.pipelines.io.bundle_changes import BundleChanges
from embedstream.pipelines.io.kafka_clients import output_limit, producer
from embedstream.pipelines.observability import INGEST
from embedstream.pipelines.stores import VectorStore
from embedstream.schemas.embeddings_wire import EmbeddingRecord, OutputFormat, encode, headers_of
from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import KafkaSettings, PipelineSettings, QdrantSettings

BATCH_BYTES = 1 << 20  # a bundle's records go in few large produce requests


class OutputTopicUnavailableError(EmbedstreamError):
    """The embeddings topic did not acknowledge a bundle's records in time."""


class EmbeddingsTopic:
    """The embeddings topic of one delivery step: ``changes`` (what the writer reports, ``bundle_changes``),
    published once the bundle is durable (``publish``) and acknowledged before it ends (``confirm``)."""

    def __init__(self, kafka: KafkaSettings, pipeline: PipelineSettings, qdrant: QdrantSettings) -> None:
        assert pipeline.output_topic is not None, "an EmbeddingsTopic needs pipeline.output_topic"
        self._topic = pipeline.output_topic
        self._format: OutputFormat = pipeline.output_format
        self._limit = output_limit(pipeline.max_event_bytes)
        self._producer = producer(kafka, self._limit, batch_size=BATCH_BYTES, max_in_flight_requests_per_connection=1)
        self._sends = AckedSends(
            self._producer.flush,
            self._send,
            pipeline.dead_letter_retry_s,
            "embeddings records",
            self._refused,
            self._gone,
        )
        self.changes = BundleChanges(pipeline.output_collection or qdrant.collection, self.publish_now)

    def close(self) -> None:
        self._producer.close()

    def start(self) -> None:
        """A new bundle: what a failed one left (logged changes, unconfirmed sends) is dropped; its retry redoes it."""
        self.changes.clear()
        self._sends.discard()

    def publish(self, store: VectorStore) -> None:
        """Send each id's state after the bundle (``BundleChanges.settle``)."""
        for change in self.changes.settle(store):
            self._sends.send(change)

    def publish_now(self, changes: list[EmbeddingRecord]) -> None:
        """Send and wait for these (removals that must be on the topic before the store forgets them), after
        what was sent before them."""
        for change in changes:
            self._sends.send(change)
        self.confirm()

    def confirm(self) -> int:
        """Wait until the broker has every record sent so far; how many there were."""
        done = self._sends.confirm()
        deletes = sum(1 for change in done if change.deleted)
        for kind, count in (("point", len(done) - deletes), ("delete", deletes)):
            if count:
                INGEST.output_records.labels(kind).inc(count)
        return len(done)

    def _send(self, change: EmbeddingRecord) -> Any:
        value = None if change.deleted else encode(change, self._format)
        headers = headers_of(change.version, self._format)
        return self._producer.send(self._topic, key=change.id.encode(), value=value, headers=headers)

    def _refused(self, change: EmbeddingRecord, error: KafkaError) -> EmbeddingRecord:
        """A topic made elsewhere with a smaller limit: no retry will pass."""
        raise OutputTopicUnavailableError(
            f"the embeddings topic {self._topic} refused the record of point {change.id} as too large ({error}); "
            f"raise the topic's max.message.bytes to {self._limit}"
        ) from error

    def _gone(self, count: int, waited_s: float, error: KafkaError) -> OutputTopicUnavailableError:
        return OutputTopicUnavailableError(
            f"the embeddings topic {self._topic} did not take {count} records in {waited_s:.0f} s "
            f"({type(error).__name__}: {error}); nothing of this bundle is committed, so a rerun writes and "
            "publishes them again"
        )
