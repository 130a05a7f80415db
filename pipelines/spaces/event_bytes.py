"""The bytes a stored picture or sound was made from, found again: from its ``uri``, or from its event in Kafka.

The store keeps a picture's payload (its ``uri`` when the event referenced one, its ``source``: topic, partition,
offset) but not its bytes. Making its vector again with another model (a migration's backfill, or an ingest
writing both models' vectors meanwhile) needs them back:

* a ``uri`` is fetched exactly as the ingest fetches it (``media.fetch_uri``: the same roots, schemes, limits);
* an event that carried its bytes inline is **read again from its topic** at its ``source`` offset — the topic
  is the log of record. Offsets are read in order with one seek per gap, so a backfill replays each partition
  from its earliest wanted offset once rather than fetching records one by one. An offset the topic no longer
  retains (older than its earliest, after retention or compaction), a record that is not the same event (its id
  and ``content_sha256`` must match the payload's) or a broker that does not answer in ``READ_TIMEOUT_S`` leaves
  the point without bytes (None) and says why in the log; the caller reports what it could not make.

A caller holds an ``EventReader`` (``MediaSources.reader``) for all its fetches — the ingest's dual writes call
once per batch, a backfill once per page — so a consumer bootstraps once, not once per call.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.media.fetch import fetch_uri
from embedstream.schemas.defaults import MAX_EVENT_BYTES
from embedstream.schemas.envelope import Envelope, Limits, parse_event
from embedstream.schemas.records import KafkaRecord
from embedstream.schemas.settings import KafkaSettings, MediaSettings

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MediaSources:
    """Where media bytes come back from: the media settings (URIs) and the broker (inline events)."""

    media: MediaSettings = field(default_factory=MediaSettings)
    kafka: KafkaSettings | None = None
    max_event_bytes: int = MAX_EVENT_BYTES

    def reader(self) -> EventReader:
        """A consumer for repeated ``fetch`` calls, opened on first need; the holder closes it."""
        return EventReader(self.kafka, self.max_event_bytes)

    def fetch(self, payloads: Sequence[Mapping[str, Any]], reader: EventReader) -> list[bytes | None]:
        """Each payload's bytes, in order; None where they cannot be had (module docstring). ``reader``: the
        caller's (``reader()``), which it keeps for its next calls and closes."""
        out: list[bytes | None] = [None] * len(payloads)
        wanted: dict[tuple[str, int], dict[int, list[int]]] = {}  # (topic, partition) → offset → payload indexes
        for i, payload in enumerate(payloads):
            uri, source = payload.get("uri"), payload.get("source")
            if isinstance(uri, str):
                try:
                    out[i] = fetch_uri(uri, self.media, self.max_event_bytes)
                except MediaError as exc:
                    log.warning("point %s: cannot fetch %s again: %s", payload.get("id"), uri, exc)
            elif isinstance(source, Mapping) and isinstance(source.get("offset"), int):
                place = (str(source["topic"]), int(source["partition"]))
                wanted.setdefault(place, {}).setdefault(int(source["offset"]), []).append(i)
        if wanted:
            if self.kafka is None:
                log.warning(
                    "%d points carried their bytes inline and no broker is configured to read them again",
                    sum(len(v) for offsets in wanted.values() for v in offsets.values()),
                )
            else:
                self._read_again(wanted, payloads, out, reader)
        return out

    def _read_again(
        self,
        wanted: dict[tuple[str, int], dict[int, list[int]]],
        payloads: Sequence[Mapping[str, Any]],
        out: list[bytes | None],
        events: EventReader,
    ) -> None:
        from kafka import TopicPartition

        limits = Limits(max_event_bytes=self.max_event_bytes)
        reader = events.consumer()
        for (topic, partition), offsets in wanted.items():
            tp = TopicPartition(topic, partition)
            reader.assign([tp])
            earliest = reader.beginning_offsets([tp]).get(tp, 0)
            gone = sorted(o for o in offsets if o < earliest)
            if gone:
                log.warning("%s/%d no longer retains offsets %s (earliest %d)", topic, partition, gone[:5], earliest)
            pending = sorted(o for o in offsets if o >= earliest)
            deadline = time.monotonic() + READ_TIMEOUT_S
            while pending and time.monotonic() < deadline:
                reader.seek(tp, pending[0])
                batch = reader.poll(timeout_ms=500).get(tp, [])
                for record in batch:
                    for i in offsets.get(record.offset, ()):
                        out[i] = self._same_event(record, payloads[i], limits)
                if batch:
                    pending = [o for o in pending if o > batch[-1].offset]
            if pending:
                log.warning("%s/%d: offsets %s not read back in %.0f s", topic, partition, pending[:5], READ_TIMEOUT_S)

    @staticmethod
    def _same_event(record: Any, payload: Mapping[str, Any], limits: Limits) -> bytes | None:
        """The record's inline bytes if it is the event the point was made from, else None."""
        headers = tuple((k, v if v is not None else b"") for k, v in (record.headers or ()))
        kafka_record = KafkaRecord.model_construct(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=headers,
            timestamp_ms=record.timestamp,
        )
        event = parse_event(kafka_record, limits)
        if not isinstance(event, Envelope) or event.data is None or event.id != payload.get("id"):
            log.warning(
                "%s/%d/%d is not the event of point %s",
                record.topic,
                record.partition,
                record.offset,
                payload.get("id"),
            )
            return None
        if hashlib.sha256(event.data).hexdigest() != payload.get("content_sha256"):
            log.warning(
                "%s/%d/%d holds other bytes than point %s was made from",
                record.topic,
                record.partition,
                record.offset,
                payload.get("id"),
            )
            return None
        return event.data


class EventReader:
    """One Kafka consumer for many ``MediaSources.fetch`` calls: made on the first read, closed by ``close``
    (then made again if read once more). Not for concurrent use, like the consumer it holds."""

    def __init__(self, kafka: KafkaSettings | None, max_event_bytes: int) -> None:
        self._kafka, self._max_event_bytes = kafka, max_event_bytes
        self._client: Any = None
        self.opened = 0  # consumers made so far (one for the reader's life unless closed between reads)

    def consumer(self) -> Any:
        from embedstream.pipelines.io.kafka_clients import consumer

        if self._client is None:
            assert self._kafka is not None, "fetch reads events again only with a broker configured"
            self._client = consumer(self._kafka, self._max_event_bytes)
            self.opened += 1
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
