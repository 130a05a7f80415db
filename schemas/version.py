"""The version every write and delete carries, defined once (docs/contracts.md, "Versions").

An event's version is ``(major, tie)``, compared as a pair:

* ``major``: the envelope's ``version`` when the producer sends one (an integer that grows per id: a CDC log
  position, an ``updated_at`` in microseconds), else the record's Kafka timestamp in milliseconds;
* ``tie``: the record's origin ``(partition << 40) | offset``, so two events of one partition with the same major
  are ordered as Kafka ordered them (and events of two partitions with the same major, by partition).

"Origin" is where the event first entered Kafka (``KafkaRecord.origin``): a ``dlq replay`` keeps the original
position and timestamp, so a replay keeps its original version. Both numbers fit Qdrant's signed 64-bit integer
payload, where the store compares them in its conditional writes (``pipelines.stores``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from embedstream.schemas.records import KafkaRecord

MAJOR_KEY = "ver"  # payload keys of a stored point's version
TIE_KEY = "ver_tie"
TOMBSTONE = "tombstone"  # the ``modality`` of a delete's marker point: never searched, read or returned
DELETED_KEY = "deleted_ms"  # when a tombstone was written (unix ms): compacted after pipeline.tombstone_retention_s
# The store compares versions with float ranges, exact for integers below 2**53: an envelope's ``version`` stays
# below that (microseconds since 1970 reach it in the year 2255), and so does the tie for partitions under 8192.
MAX_DECLARED = (1 << 53) - 1
_OFFSET_BITS = 40  # a partition's offsets up to ~1.1e12


class Version(NamedTuple):
    """An event's place in its id's history; a larger one is newer."""

    major: int
    tie: int

    @staticmethod
    def of(record: KafkaRecord, declared: int | None = None) -> Version:
        """The version of the event ``record`` carries (``declared``: its envelope's ``version``, if any)."""
        return Version.at(record.origin(), declared)

    @staticmethod
    def at(origin: Mapping[str, Any], declared: int | None = None) -> Version:
        """The version of an event first read at ``origin`` (``KafkaRecord.origin()``)."""
        partition, offset = int(origin["partition"] or 0), int(origin["offset"] or 0)
        major = declared if declared is not None else int(origin["ts_ms"] or 0)
        return Version(major, (partition << _OFFSET_BITS) | offset)

    @staticmethod
    def stored(payload: Mapping[str, Any] | None) -> Version | None:
        """The version a stored point's payload holds (None for a point written before versions, or a view)."""
        if not payload or payload.get(MAJOR_KEY) is None:
            return None
        return Version(int(payload[MAJOR_KEY]), int(payload.get(TIE_KEY) or 0))

    def fields(self) -> dict[str, int]:
        """The payload fields that hold this version."""
        return {MAJOR_KEY: self.major, TIE_KEY: self.tie}


def is_tombstone(payload: Mapping[str, Any] | None) -> bool:
    return payload is not None and payload.get("modality") == TOMBSTONE
