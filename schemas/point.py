"""What the pipeline writes into Qdrant: deterministic point ids and the payload contract.

Point id = UUIDv5 over ``modality/id`` (frames: ``video_frame/<video_id>/<index>``; a video: ``video/<video_id>``;
a long text's chunks: ``text_chunk/<id>/<index>``).
Replaying a topic therefore overwrites the same points: at-least-once delivery, exactly-once effect.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Fixed for the life of the product: changing it would orphan every stored point.
POINT_NAMESPACE = uuid.UUID("6f1c6a3e-4c1b-5e55-9b0e-6d2f3c7a9e11")


CHUNK_MODALITY = "text_chunk"  # a piece of a long text (pipelines.transforms.documents); not an event modality


def point_key(modality: str, event_id: str, video_id: str | None = None, index: int | None = None) -> str:
    """The readable key that the point id hashes (kept in logs and tests)."""
    if modality == CHUNK_MODALITY and index is not None:
        return f"{modality}/{event_id}/{index}"
    if modality in ("video_frame", "video_audio") and video_id is not None and index is not None:
        return f"{modality}/{video_id}/{index}"
    return f"{modality}/{event_id}"


def point_id(modality: str, event_id: str, video_id: str | None = None, index: int | None = None) -> str:
    """Deterministic UUIDv5 point id (string form, as Qdrant returns it)."""
    return str(uuid.uuid5(POINT_NAMESPACE, point_key(modality, event_id, video_id, index)))


class SourceRef(BaseModel):
    """Where a point's event came from; also what the sink commits."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class SparseVector(BaseModel):
    """A sparse vector: term ids and their weights (``bm25``: BM25 term frequencies; the store applies IDF)."""

    model_config = ConfigDict(frozen=True)

    indices: list[int]
    values: list[float]


class PointRecord(BaseModel):
    """One point ready for upsert: id, one vector per embedding space, payload (docs/contracts.md); text points
    also carry sparse vectors (``sparse``: ``bm25``)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    vectors: dict[str, list[float]]
    sparse: dict[str, SparseVector] = Field(default_factory=dict)
    payload: dict[str, Any] = Field(default_factory=dict)
    source: SourceRef | None = None  # None for derived points (a video's view), which no single event made
