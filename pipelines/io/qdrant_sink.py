"""Upsert points into the configured store, durably by the end of each bundle.

Points arrive in Kafka order per partition (the ingest chain is one fused stage). A later point with the same
id replaces an earlier one still in the buffer, or is upserted after it: last write wins by Kafka order.
``finish_bundle`` upserts what is left and flushes the store; the Kafka read commits the bundle's offsets only
in bundle finalization, which runs after every sink of the bundle has finished — so offsets are committed
after the points are durable, and a failed write fails the bundle and commits nothing.

Videos: the bundle's frame and audio-segment points are made durable first, then each video they touched (or
that a ``video_end`` event closed) has its view point recomputed from all its stored members
(``pipelines.transforms.video_views``) and upserted — before the bundle's offsets are committed.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from embedstream.pipelines.plan import VideoFusion
from embedstream.pipelines.progress import PROGRESS
from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.pipelines.transforms.parse import ParsedEvent
from embedstream.pipelines.transforms.video_views import video_point
from embedstream.schemas.envelope import Modality
from embedstream.schemas.point import PointRecord
from embedstream.schemas.settings import PipelineSettings, QdrantSettings

METRICS_NAMESPACE = "embedstream"


class UpsertPoints(beam.DoFn):
    def __init__(
        self,
        qdrant: QdrantSettings,
        pipeline: PipelineSettings,
        spaces: list[SpaceSpec],
        fusion: VideoFusion | None = None,
    ) -> None:
        self._qdrant = qdrant
        self._pipeline = pipeline
        self._spaces = spaces
        self._fusion = fusion
        self._counter = Metrics.counter(METRICS_NAMESPACE, "points_upserted")
        self._videos_counter = Metrics.counter(METRICS_NAMESPACE, "video_views")

    def setup(self) -> None:
        self._store = open_store(self._qdrant)
        self._store.ensure_spaces(self._spaces)

    def teardown(self) -> None:
        self._store.close()

    def start_bundle(self) -> None:
        self._buffer: dict[str, PointRecord] = {}
        self._touched: set[str] = set()
        self._ended: set[str] = set()

    def process(self, element: Any) -> None:
        if isinstance(element, ParsedEvent):  # only video_end reaches the sink as an event
            if element.envelope.modality is Modality.VIDEO_END and element.envelope.video is not None:
                self._ended.add(element.envelope.video.video_id)
                self._touched.add(element.envelope.video.video_id)
            return
        point: PointRecord = element
        video_id = point.payload.get("video_id")
        if video_id is not None:
            self._touched.add(str(video_id))
        self._buffer.pop(point.id, None)  # re-insert at the end: buffer order stays Kafka order
        self._buffer[point.id] = point
        if len(self._buffer) >= self._pipeline.upsert_batch_size:
            self._upsert()

    def finish_bundle(self) -> None:
        self._upsert()
        self._store.flush()
        if self._touched and self._fusion is not None:
            self._refresh_videos(self._fusion)
        PROGRESS.report(self._pipeline.progress_interval_s)

    def _upsert(self) -> None:
        if not self._buffer:
            return
        points = list(self._buffer.values())
        self._store.upsert(points)
        self._buffer = {}
        self._counter.inc(len(points))
        PROGRESS.add(points=len(points))

    def _refresh_videos(self, fusion: VideoFusion) -> None:
        """Recompute every touched video's view from its durable members, then make the views durable."""
        views = []
        for video_id in sorted(self._touched):
            # one scroll gives the members and the previous view (it carries video_id too: was it ended?)
            members, ended = [], video_id in self._ended
            for stored in self._store.scroll(with_vectors=True, where={"video_id": video_id}):
                if stored.payload.get("modality") == "video":
                    ended = ended or bool(stored.payload.get("ended"))
                else:
                    members.append(stored)
            view = video_point(video_id, members, fusion, ended)
            if view is not None:
                views.append(view)
        if views:
            self._store.upsert(views)
            self._store.flush()
            self._videos_counter.inc(len(views))
