"""What the parse step hands down the chain, as plain data: a valid event or a deletion, each with its record.

Kept apart from the Beam transform that makes them (``transforms.parse``) so that what only reads them — the
delivery step's types, re-embedding, the documents' point rules — never imports Apache Beam.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedstream.schemas.envelope import Deletion, Envelope
from embedstream.schemas.records import KafkaRecord


@dataclass(frozen=True)
class ParsedEvent:
    """A valid envelope together with the record it came from (for payload provenance and commits)."""

    envelope: Envelope
    record: KafkaRecord


@dataclass(frozen=True)
class DeleteEvent:
    """A deletion (``op: delete`` or a tombstone) with the record it came from: ordered by its offset."""

    deletion: Deletion
    record: KafkaRecord
