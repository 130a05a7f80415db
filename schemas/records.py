"""The consumed Kafka record, as it travels through the pipeline.

A record keeps its topic, partition and offset so that sinks can commit offsets and dead letters can point
back at the exact message that failed (the bytewax ``KafkaSourceMessage`` trait).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

REPLAY_PREFIX = "es-replay-"  # kept equal to dead_letter.REPLAY_HEADER_PREFIX (records imports nothing of ours)


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

    def origin(self) -> dict[str, str | int | None]:
        """Where this event first entered Kafka: its own position, or — for an event that ``dlq replay``
        re-produced — the position its ``es-replay-*`` headers name. A point keeps it as its ``source``, so
        that a replay can tell an older version of an id from a newer one."""
        replay = {k[len(REPLAY_PREFIX) :]: v for k, v in self.headers if k.startswith(REPLAY_PREFIX)}
        own: dict[str, str | int | None] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "ts_ms": self.timestamp_ms,
        }
        if not replay:
            return own
        try:
            return {
                "topic": replay["topic"].decode("utf-8"),
                "partition": int(replay["partition"]),
                "offset": int(replay["offset"]),
                "ts_ms": int(replay["ts"]) if replay.get("ts") else None,
                "replayed_from": f"{self.topic}/{self.partition}/{self.offset}",
            }
        except (KeyError, ValueError):  # damaged replay headers: the record stands for itself
            return own
