"""The sink: upsert points, publish dead letters, make both durable, then commit offsets.

Every record read produces exactly one outcome (a point or a dead letter) and the whole ingest chain is
one fused stage, so when this DoFn's ``finish_bundle`` runs, every record of the bundle has reached it.
There, in this order: remaining points are upserted, the store is flushed, the dead-letter producer is
flushed (each send checked), and only then is ``max offset + 1`` per partition committed for the group.
A failure anywhere raises, the bundle fails, nothing is committed, and the records are read again:
at-least-once delivery with deterministic ids, so replays overwrite rather than duplicate.

Within a bundle points arrive in Kafka order per partition; a later point with the same id replaces an
earlier one in the buffer, or is upserted after it: last write wins by Kafka order.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from pipelines.io.kafka_clients import consumer, producer
from pipelines.stores import SpaceSpec, open_store
from schemas.dead_letter import DeadLetter
from schemas.point import PointRecord
from schemas.settings import Settings

log = logging.getLogger(__name__)
NAMESPACE = "embedstream"


class Deliver(beam.DoFn):
    def __init__(self, settings: Settings, spaces: list[SpaceSpec]) -> None:
        self._settings = settings
        self._spaces = spaces
        self._points_counter = Metrics.counter(NAMESPACE, "points_upserted")
        self._dead_counter = Metrics.counter(NAMESPACE, "dead_letters")
        self._commit_counter = Metrics.counter(NAMESPACE, "offset_commits")

    def setup(self) -> None:
        settings = self._settings
        self._store = open_store(settings.qdrant)
        self._store.ensure_spaces(self._spaces)
        self._producer = producer(settings.kafka, settings.pipeline.max_event_bytes)
        self._committer = consumer(settings.kafka, settings.pipeline.max_event_bytes, group=True)
        self._committed: dict[tuple[str, int], int] = {}
        self._totals = {"points": 0, "dead": 0}
        self._started = time.monotonic()
        self._last_report = self._started

    def teardown(self) -> None:
        for closer in (
            getattr(self, "_store", None),
            getattr(self, "_producer", None),
            getattr(self, "_committer", None),
        ):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # teardown is best effort; the data is already durable
                    log.debug("close failed", exc_info=True)

    def start_bundle(self) -> None:
        self._points: dict[str, PointRecord] = {}
        self._sends: list[Any] = []
        self._high: dict[tuple[str, int], int] = {}

    def process(self, outcome: PointRecord | DeadLetter) -> None:
        if isinstance(outcome, PointRecord):
            source = (outcome.source.topic, outcome.source.partition, outcome.source.offset)
            self._points.pop(outcome.id, None)  # re-insert: keeps buffer order = Kafka order
            self._points[outcome.id] = outcome
            if len(self._points) >= self._settings.pipeline.upsert_batch_size:
                self._upsert()
        else:
            src = outcome.source
            source = (src.topic, src.partition, src.offset)
            self._sends.append(
                self._producer.send(
                    self._settings.kafka.dead_letter_topic,
                    key=src.key,
                    value=src.value,
                    headers=outcome.kafka_headers(),
                )
            )
            self._dead_counter.inc()
            self._totals["dead"] += 1
        key = source[:2]
        if source[2] > self._high.get(key, -1):
            self._high[key] = source[2]

    def finish_bundle(self) -> None:
        self._upsert()
        self._store.flush()
        self._producer.flush()
        for send in self._sends:
            send.get(timeout=30)  # raises if the dead letter did not reach the broker
        self._commit()
        self._report()

    def _upsert(self) -> None:
        if not self._points:
            return
        points = list(self._points.values())
        self._store.upsert(points)
        self._points = {}
        self._points_counter.inc(len(points))
        self._totals["points"] += len(points)

    def _commit(self) -> None:
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(high + 1, "", -1)
            for (topic, partition), high in self._high.items()
            if high + 1 > self._committed.get((topic, partition), -1)
        }
        if not offsets:
            return
        self._committer.commit(offsets)
        for tp, meta in offsets.items():
            self._committed[(tp.topic, tp.partition)] = meta.offset
        self._commit_counter.inc()

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < self._settings.pipeline.progress_interval_s:
            return
        self._last_report = now
        done = self._totals["points"] + self._totals["dead"]
        rate = done / max(now - self._started, 1e-9)
        log.info(
            "ingest progress: %d points stored, %d dead letters, %.1f events/s",
            self._totals["points"],
            self._totals["dead"],
            rate,
        )
