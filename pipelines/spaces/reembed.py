"""A stored text point's vector made again from its payload, by another text model — as the ingest makes it.

A migration (``pipelines.spaces.migration``) fills a space's new vectors from what the store keeps, and the
ingest writes both models' vectors while it runs (``dual_write``). Both must give the vector a fresh ingest with
that model would give, or a migrated store would answer differently from a rebuilt one:

* a short text or a chunk: its ``text`` encoded (truncated at the model's limit, as the ingest does);
* a document (a text with ``chunks``): cut again with the model's tokenizer and the run's chunk settings, each
  chunk encoded, the normalized mean (``transforms.documents.mean_vector``); if the cut gives another number of
  chunks than the stored document has, its chunk points would not match it, so it is not made (None).

Other points (pictures in a text space, through ConSE; video views) cannot be made from their payload: None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from embedstream.onnx_models.chunking import chunker_for
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.transforms.documents import mean_vector
from embedstream.schemas.point import CHUNK_MODALITY
from embedstream.schemas.settings import ModelSettings

TEXT_MODALITIES = frozenset({"text", CHUNK_MODALITY})


class Reembedder:
    """One text model's vectors for stored text points (module docstring)."""

    def __init__(self, model: ModelSettings, ref: str) -> None:
        self.ref = ref
        self.encoder = TextEncoder.load(model.cache_dir, ref, model)
        self._chunker = chunker_for(self.encoder, model)

    def vectors(self, payloads: Sequence[Mapping[str, Any]]) -> list[np.ndarray | None]:
        """Each payload's vector, in order; None where it cannot be made (module docstring)."""
        out: list[np.ndarray | None] = [None] * len(payloads)
        texts: list[str] = []  # every text encoded, in one call: short texts, chunks, documents' chunks
        plans: list[tuple[int, int, int, bool]] = []  # payload index → its texts [start, end), is it a document
        for i, payload in enumerate(payloads):
            text = payload.get("text")
            if payload.get("modality") not in TEXT_MODALITIES or not isinstance(text, str):
                continue
            parts = [text]
            document = payload.get("modality") == "text" and bool(payload.get("chunks"))
            if document:
                chunks = self._chunker.chunks(text) if self._chunker is not None else []
                if len(chunks) != int(payload["chunks"]):
                    continue
                parts = [chunk.text for chunk in chunks]
            plans.append((i, len(texts), len(texts) + len(parts), document))
            texts += parts
        rows = self.encoder.embed(texts)
        for i, start, end, document in plans:
            out[i] = mean_vector(list(rows[start:end])) if document else rows[start]
        return out
