"""The consumed Kafka record, as it travels through the pipeline.

A record keeps its topic, partition and offset so that sinks can commit offsets and dead letters can point
back at the exact message that failed (the bytewax ``KafkaSourceMessage`` trait).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class KafkaRecord(BaseModel):
    """One message read from Kafka, bytes untouched."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None
