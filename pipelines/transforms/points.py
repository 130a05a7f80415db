"""Turn an embedded event into the point the store receives (the payload contract in docs/contracts.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from embedstream.pipelines.events import ParsedEvent
from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.point import PointRecord, SourceRef, SparseVector, point_id
from embedstream.schemas.version import Version


def content_sha256(event: ParsedEvent) -> str:
    envelope = event.envelope
    if envelope.text is not None:
        return hashlib.sha256(envelope.text.encode("utf-8")).hexdigest()
    if envelope.data is not None:
        return hashlib.sha256(envelope.data).hexdigest()
    return hashlib.sha256((envelope.uri or "").encode("utf-8")).hexdigest()


def to_point(
    event: ParsedEvent,
    vectors: Mapping[str, np.ndarray],
    models: Mapping[str, str],
    ingested_at: str | None = None,
    extra: Mapping[str, Any] | None = None,
    sparse: Mapping[str, SparseVector] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> PointRecord:
    """A point with one vector per space (``sparse``: and sparse ones) and the full payload; the text itself is
    kept, never stripped.

    ``ingested_at`` (ISO 8601) may be shared by a whole batch; by default it is now. ``extra`` adds facts the
    decoder learned (a picture's size, a sound's length) under ``media``; ``fields`` adds top-level ones (a
    document's ``doc_id`` and ``chunks``, a truncated text's ``truncated``)."""
    envelope, record = event.envelope, event.record
    video, origin = envelope.video, record.origin()
    payload: dict[str, Any] = {
        "modality": envelope.modality.value,
        "id": envelope.id,
        "metadata": envelope.metadata,
        "ts": envelope.ts.isoformat() if envelope.ts else None,
        "ingested_at": ingested_at or datetime.now(UTC).isoformat(),
        "content_sha256": content_sha256(event),
        "models": dict(models),
        "source": origin,
        **Version.at(origin, envelope.version).fields(),  # what the store's conditional write compares
    }
    if envelope.text is not None:
        payload["text"] = envelope.text
    if envelope.uri is not None:
        payload["uri"] = envelope.uri
    if envelope.mime is not None:
        payload["mime"] = envelope.mime
    if extra:
        payload["media"] = dict(extra)
    if fields:
        payload.update(fields)
    if video is not None:
        payload["video_id"] = video.video_id
        payload["video"] = video.model_dump(exclude_none=True)
    pid = point_id(
        envelope.modality.value,
        envelope.id,
        video.video_id if video else None,
        video.index if video else None,
    )
    # model_construct: every field is built right here from validated parts; re-validating 384 floats per
    # point cost ~30 µs an event on the hot path.
    return PointRecord.model_construct(
        id=pid,
        vectors={space: vector.tolist() for space, vector in vectors.items()},
        payload=payload,
        source=SourceRef.model_construct(topic=record.topic, partition=record.partition, offset=record.offset),
        sparse=dict(sparse or {}),
    )


def point_or_dead(
    event: ParsedEvent,
    vectors: Mapping[str, np.ndarray],
    models: Mapping[str, str],
    ingested_at: str | None = None,
    extra: Mapping[str, Any] | None = None,
    sparse: Mapping[str, SparseVector] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> PointRecord | DeadLetter:
    """``to_point``, or the event's dead letter if building its payload raised: one event, not its batch."""
    try:
        return to_point(event, vectors, models, ingested_at, extra, sparse, fields)
    except Exception as exc:
        message = f"building the point raised {type(exc).__name__}: {exc}"
        return DeadLetter.of(event.record, Reason.STAGE_FAILED, message, "payload", event.envelope.id)
