"""A stored point's vector made again by another model — as the ingest makes it.

A migration (``pipelines.spaces.migration``) fills a space's new vectors from what the store keeps, and the
ingest writes both models' vectors while it runs (``dual_write``). Both must give the vector a fresh ingest with
that model would give, or a migrated store would answer differently from a rebuilt one:

* **text model** — a short text or a chunk: its ``text`` encoded (truncated at the model's limit, as the ingest
  does); a document (a text with ``chunks``): cut again with the model's tokenizer and the run's chunk settings,
  each chunk encoded, the normalized mean (``transforms.documents.mean_vector``); if the cut gives another number
  of chunks than the stored document has, its chunk points would not match it, so it is not made (None).
* **image or audio model** — the picture's or sound's bytes found again (``event_bytes``: its ``uri``, or its
  event read again from the topic), decoded with the ingest's decoders and limits, encoded.

A point of a modality the model does not embed (a picture in a text space through ConSE, a video's view) cannot
be made: None. ``REMADE`` says which modalities each kind of model makes again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from embedstream.onnx_models.audio_encoder import AudioEncoder
from embedstream.onnx_models.chunking import chunker_for
from embedstream.onnx_models.encoders import load_encoder
from embedstream.onnx_models.image_encoder import ImageEncoder
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.onnx_models.vectors import mean_vector
from embedstream.pipelines.media.audio import decode_audio
from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.media.images import decode_image
from embedstream.pipelines.spaces.event_bytes import MediaSources
from embedstream.schemas.errors import UsageError
from embedstream.schemas.point import CHUNK_MODALITY
from embedstream.schemas.settings import ModelSettings, Settings

log = logging.getLogger(__name__)

TEXT_MODALITIES = frozenset({"text", CHUNK_MODALITY})
REMADE: dict[str, frozenset[str]] = {  # a model's modality → the point modalities it makes again
    "text": TEXT_MODALITIES,
    "image": frozenset({"image", "video_frame"}),
    "audio": frozenset({"audio", "video_audio"}),
}


@dataclass(frozen=True)
class RemakeFrom:
    """What making vectors again needs: where models load from (and their runtime settings), and for pictures
    and sounds where their bytes come back from."""

    model: ModelSettings
    sources: MediaSources = field(default_factory=MediaSources)

    @classmethod
    def of(cls, settings: Settings) -> RemakeFrom:
        media = MediaSources(settings.media, settings.kafka, settings.pipeline.max_event_bytes)
        return cls(settings.model, media)


class Reembedder(Protocol):
    def vectors(self, payloads: Sequence[Mapping[str, Any]]) -> list[np.ndarray | None]:
        """Each payload's vector, in order; None where it cannot be made."""
        ...

    def close(self) -> None:
        """Release what it holds open between calls (a media re-embedder's Kafka consumer)."""
        ...


def reembedder(remake: RemakeFrom, ref: str) -> Reembedder:
    """The re-embedder for model ``ref`` (by its modality)."""
    encoder = load_encoder(remake.model.cache_dir, ref, remake.model)
    if isinstance(encoder, TextEncoder):
        return TextReembedder(remake.model, encoder)
    if isinstance(encoder, ImageEncoder | AudioEncoder):
        return MediaReembedder(remake, encoder)
    raise UsageError(f"{ref} is not a text, image or audio model: its vectors cannot be made again")


class TextReembedder:
    """One text model's vectors for stored text points (module docstring)."""

    def __init__(self, model: ModelSettings, encoder: TextEncoder) -> None:
        self.encoder = encoder
        # counted with sentence chunks whatever model.sentence_points says now: a document's stored ``chunks``
        # is its passages alone or passages plus sentences, by the setting it was ingested with
        self._chunker = chunker_for(self.encoder, model.model_copy(update={"sentence_points": True}))

    def vectors(self, payloads: Sequence[Mapping[str, Any]]) -> list[np.ndarray | None]:
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
                passages = [chunk.text for chunk in chunks if chunk.level == "passage"]
                if int(payload["chunks"]) not in (len(chunks), len(passages)):  # (stored before sentence points)
                    continue
                parts = passages  # the document's vector is its passages' mean
            plans.append((i, len(texts), len(texts) + len(parts), document))
            texts += parts
        rows = self.encoder.embed(texts)
        for i, start, end, document in plans:
            out[i] = mean_vector(list(rows[start:end])) if document else rows[start]
        return out

    def close(self) -> None:
        """Nothing held open: texts come from the payloads."""


class MediaReembedder:
    """One image or audio model's vectors for stored pictures or sounds (module docstring)."""

    def __init__(self, remake: RemakeFrom, encoder: ImageEncoder | AudioEncoder) -> None:
        self.encoder = encoder
        self.modalities = REMADE["image" if isinstance(encoder, ImageEncoder) else "audio"]
        self._sources = remake.sources
        self._reader = remake.sources.reader()  # one consumer for every call that reads inline events again

    def close(self) -> None:
        self._reader.close()

    def vectors(self, payloads: Sequence[Mapping[str, Any]]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(payloads)
        mine = [i for i, p in enumerate(payloads) if p.get("modality") in self.modalities]
        found = self._sources.fetch([payloads[i] for i in mine], self._reader)
        at, items = [], []
        for i, data in zip(mine, found, strict=True):
            if data is None:
                continue
            try:
                items.append(self._prepare(data))
                at.append(i)
            except MediaError as exc:  # the ingest decoded it, so the bytes changed or the limits did
                log.warning("point %s: its bytes no longer decode: %s", payloads[i].get("id"), exc)
        if items:
            for i, row in zip(at, self.encoder.embed_batch(items), strict=True):
                out[i] = row
        return out

    def _prepare(self, data: bytes) -> np.ndarray:
        media = self._sources.media
        if isinstance(self.encoder, ImageEncoder):
            image = decode_image(data, media.max_image_pixels, min_short_side=self.encoder.spec.resize_short)
            return self.encoder.prepare([image])[0]
        rate = self.encoder.sample_rate
        wave = decode_audio(data, rate, media.max_audio_seconds, media.silence_dbfs, media.min_audio_seconds)
        return self.encoder.prepare([wave])[0]
