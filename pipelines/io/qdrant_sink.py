"""Upsert points into the configured store, durably by the end of each bundle.

Points arrive in Kafka order per partition (the ingest chain is one fused stage). A later point with the same
id replaces an earlier one still in the buffer, or is upserted after it: last write wins by Kafka order.
``finish_bundle`` upserts what is left and flushes the store; the Kafka read commits the bundle's offsets only
in bundle finalization, which runs after every sink of the bundle has finished — so offsets are committed
after the points are durable, and a failed write fails the bundle and commits nothing.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.progress import PROGRESS
from pipelines.stores import SpaceSpec, open_store
from schemas.point import PointRecord
from schemas.settings import PipelineSettings, QdrantSettings

METRICS_NAMESPACE = "embedstream"


class UpsertPoints(beam.DoFn):
    def __init__(self, qdrant: QdrantSettings, pipeline: PipelineSettings, spaces: list[SpaceSpec]) -> None:
        self._qdrant = qdrant
        self._pipeline = pipeline
        self._spaces = spaces
        self._counter = Metrics.counter(METRICS_NAMESPACE, "points_upserted")

    def setup(self) -> None:
        self._store = open_store(self._qdrant)
        self._store.ensure_spaces(self._spaces)

    def teardown(self) -> None:
        self._store.close()

    def start_bundle(self) -> None:
        self._buffer: dict[str, PointRecord] = {}

    def process(self, point: PointRecord) -> None:
        self._buffer.pop(point.id, None)  # re-insert at the end: buffer order stays Kafka order
        self._buffer[point.id] = point
        if len(self._buffer) >= self._pipeline.upsert_batch_size:
            self._upsert()

    def finish_bundle(self) -> None:
        self._upsert()
        self._store.flush()
        PROGRESS.report(self._pipeline.progress_interval_s)

    def _upsert(self) -> None:
        if not self._buffer:
            return
        points = list(self._buffer.values())
        self._store.upsert(points)
        self._buffer = {}
        self._counter.inc(len(points))
        PROGRESS.add(points=len(points))
