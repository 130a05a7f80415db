"""A long text's points: one per chunk, and the document's own point (docs/contracts.md).

A text longer than the text model reads is cut into chunks (``onnx_models.chunking``) and each chunk is
embedded like a short text. Its points:

* **chunks**: ``text_chunk`` points keyed by (document id, chunk index) — ``point_id("text_chunk", id,
  index=i)`` — with ``doc_id``, ``chunk``, ``chunks``, ``level`` (``passage``: the ~256-token pieces that
  cover the text; ``sentence``: one sentence, after the passages, with ``model.sentence_points``), the chunk's
  character offsets ``start``/``end`` in the document, its own text and BM25 vector, and the document's
  metadata (a filter on it finds the chunks too);
* **the document**: the point a short text with that id would be (``point_id("text", id)``), holding the full
  text once, ``doc_id`` and ``chunks`` (all chunk points, sentences included); its vector is the normalized mean
  of its passages' vectors, its BM25 vector the whole text's.

All of them come from one event, so they are a pure function of it: a duplicate, a replay or another order of
events gives the same points (unlike a video, whose members arrive as separate events). What a document's
previous version left behind — chunks past the new count — the writer removes (``io.point_writer``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from embedstream.onnx_models.chunking import Chunk
from embedstream.onnx_models.vectors import mean_vector
from embedstream.pipelines.events import ParsedEvent
from embedstream.pipelines.transforms.points import point_or_dead
from embedstream.schemas.dead_letter import DeadLetter
from embedstream.schemas.point import CHUNK_MODALITY, PointRecord, SparseVector, point_id


def document_points(
    event: ParsedEvent,
    chunks: Sequence[Chunk],
    rows: Sequence[Mapping[str, np.ndarray]],
    models: Mapping[str, str],
    ingested_at: str,
    sparse: Callable[[str], dict[str, SparseVector]],
) -> list[PointRecord | DeadLetter]:
    """The chunk points (in order) and then the document's point; or the event's one dead letter."""
    spaces = list(rows[0])
    passages = [row for chunk, row in zip(chunks, rows, strict=True) if chunk.level == "passage"]
    vectors = {space: mean_vector([row[space] for row in passages]) for space in spaces}
    doc_id = event.envelope.id
    fields = {"doc_id": doc_id, "chunks": len(chunks)}
    view = point_or_dead(event, vectors, models, ingested_at, sparse=sparse(event.envelope.text or ""), fields=fields)
    if isinstance(view, DeadLetter):
        return [view]
    points: list[PointRecord | DeadLetter] = [
        _chunk_point(view, chunk, row, sparse(chunk.text)) for chunk, row in zip(chunks, rows, strict=True)
    ]
    return [*points, view]


def _chunk_point(
    document: PointRecord, chunk: Chunk, row: Mapping[str, np.ndarray], sparse: dict[str, SparseVector]
) -> PointRecord:
    payload: dict[str, Any] = {
        **document.payload,
        "modality": CHUNK_MODALITY,
        "text": chunk.text,
        "chunk": chunk.index,
        "level": chunk.level,
        "start": chunk.start,
        "end": chunk.end,
        "content_sha256": hashlib.sha256(chunk.text.encode("utf-8")).hexdigest(),
    }
    return PointRecord.model_construct(
        id=point_id(CHUNK_MODALITY, str(document.payload["doc_id"]), index=chunk.index),
        vectors={space: vector.tolist() for space, vector in row.items()},
        payload=payload,
        source=document.source,
        sparse=sparse,
    )
