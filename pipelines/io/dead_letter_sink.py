"""Publish dead letters to the dead-letter topic, confirmed by the broker before the bundle ends.

Each dead letter is the original message (key, value bytes, headers) plus ``es-dlq-*`` context headers.
``finish_bundle`` flushes the producer and checks every send, so a dead letter the broker did not take fails
the bundle, and the bundle's offsets are not committed (see ``kafka_read``).
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from embedstream.pipelines.io.kafka_clients import producer
from embedstream.pipelines.io.qdrant_sink import METRICS_NAMESPACE
from embedstream.pipelines.progress import PROGRESS
from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.settings import KafkaSettings, PipelineSettings

SEND_TIMEOUT_S = 30


class PublishDeadLetters(beam.DoFn):
    def __init__(self, kafka: KafkaSettings, pipeline: PipelineSettings) -> None:
        self._kafka = kafka
        self._pipeline = pipeline
        self._counter = Metrics.counter(METRICS_NAMESPACE, "dead_letters")
        self._by_reason: dict[Reason, Any] = {}

    def setup(self) -> None:
        self._producer = producer(self._kafka, self._pipeline.max_event_bytes)

    def teardown(self) -> None:
        self._producer.close()

    def start_bundle(self) -> None:
        self._sends: list[Any] = []

    def process(self, dead: DeadLetter) -> None:
        source = dead.source
        self._sends.append(
            self._producer.send(
                self._kafka.dead_letter_topic, key=source.key, value=source.value, headers=dead.kafka_headers()
            )
        )
        by_reason = self._by_reason.get(dead.reason)
        if by_reason is None:
            by_reason = self._by_reason[dead.reason] = Metrics.counter(
                METRICS_NAMESPACE, f"dead_letters.{dead.reason.value}"
            )
        by_reason.inc()

    def finish_bundle(self) -> None:
        if not self._sends:
            return
        self._producer.flush()
        for send in self._sends:
            send.get(timeout=SEND_TIMEOUT_S)  # raises if the broker did not take it
        self._counter.inc(len(self._sends))
        PROGRESS.add(dead_letters=len(self._sends))
        self._sends = []
