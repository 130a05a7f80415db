"""The one terminal step of the ingest chain: points into the store, dead letters onto their topic (and, with
``pipeline.output_topic``, what was written onto the embeddings topic), durably.

Everything the chain produces reaches this step: ``PointRecord``s, ``DeadLetter``s, deletions (``DeleteEvent``)
and the ``video_end`` events that close videos. ``finish_bundle`` makes the points durable
(``PointWriter.flush``), adds the dead letters the store made (refused or superseded points), publishes every
dead letter and waits for the broker's acknowledgement (``DeadLetterPublisher.confirm``); with an output topic it
also publishes each id's state after the bundle (``bundle_changes``) and waits for those acknowledgements
(``EmbeddingsTopic.confirm``). Only then does the bundle end — and the Kafka read commits offsets in bundle
finalization, which runners call after every step of the bundle has finished. A failure here fails the bundle:
nothing is committed, the records are read again, and deterministic point ids make the rewrite harmless.

One step rather than a sink per output: some runners compute only a pipeline's last leaf (Dask), and on the
local runner a Flatten would break the chain's fusion (so the read's bundle would not include the writes).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics

from embedstream.pipelines.events import DeleteEvent, ParsedEvent
from embedstream.pipelines.handles import Handle
from embedstream.pipelines.io.dead_letter_publisher import DeadLetterPublisher
from embedstream.pipelines.io.embeddings_topic import EmbeddingsTopic
from embedstream.pipelines.io.partition_owner import Fence
from embedstream.pipelines.io.point_writer import PointWriter
from embedstream.pipelines.io.quiet_indexer import QuietIndexer
from embedstream.pipelines.metrics import METRICS_NAMESPACE
from embedstream.pipelines.observability import INGEST
from embedstream.pipelines.plan import VideoFusion
from embedstream.pipelines.progress import Progress
from embedstream.pipelines.spaces.reembed import RemakeFrom
from embedstream.pipelines.stores import SpaceSpec, VectorStore, open_store
from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.envelope import Modality
from embedstream.schemas.point import PointRecord, SourceRef
from embedstream.schemas.settings import KafkaSettings, PipelineSettings, QdrantSettings
from embedstream.schemas.version import Version

COMPACT_EVERY_S = 3600.0  # tombstones past their retention are removed this often (and at a worker's first bundle)


class Deliver(beam.DoFn):
    def __init__(
        self,
        kafka: KafkaSettings,
        qdrant: QdrantSettings,
        pipeline: PipelineSettings,
        spaces: list[SpaceSpec],
        fusion: VideoFusion | None = None,
        progress: Handle[Progress] | None = None,
        store: Handle[VectorStore] | None = None,
        remake: RemakeFrom | None = None,
        index_when_quiet: tuple[float, int] | None = None,
        run_id: str | None = None,
    ) -> None:
        """``index_when_quiet``: (quiet seconds, minimum vectors) for a ``QuietIndexer`` beside the writer
        (stream mode on the embedded store); ``run_id``: the run whose partition claims every write is fenced by
        (``partition_owner.Fence``; None: unfenced, for a writer outside an ingest)."""
        self._run_id = run_id
        self._kafka = kafka
        self._remake = remake
        self._index_when_quiet = index_when_quiet
        self._qdrant = qdrant
        self._pipeline = pipeline
        self._spaces = spaces
        self._fusion = fusion
        self._progress_handle = progress
        self._store_handle = store
        self._points = Metrics.counter(METRICS_NAMESPACE, "points_upserted")
        self._views = Metrics.counter(METRICS_NAMESPACE, "video_views")
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")
        self._deletions = Metrics.counter(METRICS_NAMESPACE, "deletions")
        self._by_reason: dict[Reason, Any] = {}

    def setup(self) -> None:
        # The launcher's own progress and (serve --ingest) its open store when this worker runs in its process;
        # otherwise this worker's own.
        progress = self._progress_handle
        self._progress = progress.get() if progress is not None and progress.available else Progress()
        self._store = self._store_handle.get() if self._store_handle is not None else open_store(self._qdrant)
        self._store.ensure_spaces(self._spaces)
        self._fence = (
            Fence(self._kafka, self._run_id, self._pipeline.reader_heartbeat_s) if self._run_id is not None else None
        )
        output = self._pipeline.output_topic is not None
        self._output = EmbeddingsTopic(self._kafka, self._pipeline, self._qdrant) if output else None
        self._writer = PointWriter(
            self._store,
            self._pipeline.upsert_batch_size,
            self._fusion,
            self._written,
            self._remake,
            {space.name: space.model for space in self._spaces if not space.sparse},
            self._fence.check if self._fence is not None else None,
            self._output.changes if self._output is not None else None,
        )
        self._compacted_at = -float("inf")
        self._publisher = DeadLetterPublisher(self._kafka, self._pipeline)
        self._indexer = QuietIndexer(self._store, *self._index_when_quiet) if self._index_when_quiet else None
        if self._indexer is not None:
            self._indexer.start()

    def teardown(self) -> None:
        if self._indexer is not None:
            self._indexer.stop()  # before the store closes: a build may be running
        self._publisher.close()
        if self._output is not None:
            self._output.close()
        self._writer.close()
        if self._fence is not None:
            self._fence.close()
        if self._store_handle is None:  # a shared store is closed by its owner
            self._store.close()

    def _compact_tombstones(self) -> None:
        """Tombstones older than ``pipeline.tombstone_retention_s`` go, at most every ``COMPACT_EVERY_S`` (one
        filter delete on the indexed ``modality``), once the bundle's own writes are durable."""
        now = time.monotonic()
        if now - self._compacted_at < COMPACT_EVERY_S:
            return
        self._compacted_at = now
        self._store.compact_tombstones(int((time.time() - self._pipeline.tombstone_retention_s) * 1000))

    def _written(self, points: list[PointRecord]) -> None:
        if self._indexer is not None:
            self._indexer.wrote()
        self._points.inc(len(points))
        self._progress.add(points=len(points))
        INGEST.events.labels("point").inc(len(points))
        for space, count in Counter(space for point in points for space in point.vectors).items():
            INGEST.points.labels(space).inc(count)  # one labelled update per space and batch, not per point

    def start_bundle(self) -> None:
        self._writer.start()
        if self._output is not None:
            self._output.start()
        self._arrivals: list[int] = []  # Kafka timestamps (ms) of the events this bundle delivers

    def process(self, element: Any) -> Iterable[None]:
        """Writes, deletes or dead-letters one element; the last step, so it emits nothing.

        Annotated as an (empty) iterable because Beam reads ``process``'s hints: from 2.78 it refuses a
        ``-> None`` DoFn at construction ("Return value not iterable").
        """
        if isinstance(element, PointRecord):
            self._writer.add(element)
            stamp = element.payload.get("source", {}).get("ts_ms")
            if stamp is not None:
                self._arrivals.append(stamp)
        elif isinstance(element, DeadLetter):
            self._publisher.publish(element)
            if element.source.timestamp_ms is not None:
                self._arrivals.append(element.source.timestamp_ms)
        elif isinstance(element, DeleteEvent):
            record = element.record
            at = SourceRef(topic=record.topic, partition=record.partition, offset=record.offset)
            self._writer.delete(element.deletion, at, Version.of(record, element.deletion.version))
            if self._indexer is not None:
                self._indexer.wrote()
            self._deletions.inc()
            self._progress.add(deletions=1)
            INGEST.events.labels("deleted").inc()
            if record.timestamp_ms is not None:
                self._arrivals.append(record.timestamp_ms)
        elif isinstance(element, ParsedEvent):  # only video_end reaches this step as an event
            envelope = element.envelope
            if envelope.modality is Modality.VIDEO_END and envelope.video is not None:
                self._writer.video_ended(envelope.video.video_id, Version.of(element.record, envelope.version))
        else:
            kind = type(element).__name__
            raise TypeError(f"Deliver got a {kind}; the chain passes points, deletions and dead letters")
        return ()

    def finish_bundle(self) -> None:
        views, dead = self._writer.flush()
        if self._output is not None:
            self._output.publish(self._store)
        self._compact_tombstones()
        for letter in dead:
            self._publisher.publish(letter)
        sent = self._publisher.confirm()
        if self._output is not None:
            self._output.confirm()
        self._observe_latency()
        if views:
            self._views.inc(views)
        if sent:
            self._dead_letters.inc(len(sent))
            self._progress.add(dead_letters=len(sent))
            INGEST.events.labels("dead_letter").inc(len(sent))
            for letter in sent:
                INGEST.dead_letters.labels(letter.reason.value).inc()
                counter = self._by_reason.get(letter.reason)
                if counter is None:
                    counter = self._by_reason[letter.reason] = Metrics.counter(
                        METRICS_NAMESPACE, f"dead_letters.{letter.reason.value}"
                    )
                counter.inc()
        self._progress.report(self._pipeline.progress_interval_s)

    def _observe_latency(self) -> None:
        """Event → durable, from each event's Kafka timestamp, now that the bundle's writes are durable."""
        now_ms = time.time() * 1000
        for stamp in self._arrivals:
            INGEST.event_latency.observe(max(0.0, (now_ms - stamp) / 1000))
        self._arrivals = []
