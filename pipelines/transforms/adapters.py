"""What each modality brings to the one embedding step (``transforms.embed``): its events, how one becomes a
prepared model input and what it costs, and the spaces its points get.

- **Text**: a window of ``sort_window`` texts is tokenized in one call on the bundle thread; a text costs its
  token count, batches hold at most ``max_batch_tokens`` padded tokens.
- **Pictures** (and video frames): fetched, decoded and preprocessed in the pool; each costs 1 (224² pixels
  after the crop), batches of ``media.batch_size``. The EfficientNet backbone runs once for both spaces when the
  ConSE model ships a head graph over its features (``HeadSpec``): half the encoder work of running both.
- **Sounds** (and video audio segments): decoded to mono at the model's rate, silence refused, and turned into
  mel partials in the pool; a sound costs its partials (its seconds), batches hold at most 64 partials.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from embedstream.onnx_models.audio_encoder import AudioEncoder
from embedstream.onnx_models.bm25 import BM25_SPACE, Bm25
from embedstream.onnx_models.chunking import chunker_for
from embedstream.onnx_models.image_encoder import FeatureHead, ImageEncoder
from embedstream.onnx_models.manifest import ImageManifest
from embedstream.onnx_models.registry import ModelKindError, load_manifest_of
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.events import ParsedEvent
from embedstream.pipelines.media.audio import decode_audio
from embedstream.pipelines.media.fetch import content_bytes
from embedstream.pipelines.media.images import ORIGINAL_SIZE, decode_image
from embedstream.pipelines.media.previews import sound_preview, thumbnail
from embedstream.pipelines.transforms.documents import document_points
from embedstream.pipelines.transforms.embed import ModalityAdapter, Prepared, Space
from embedstream.schemas.dead_letter import Reason
from embedstream.schemas.envelope import Modality
from embedstream.schemas.point import SparseVector
from embedstream.schemas.settings import MediaSettings, ModelSettings, PipelineSettings


class TextAdapter(ModalityAdapter):
    """Text events → the text model's space (and ``bm25``). A text longer than the model reads is cut into
    chunks (``model.chunking``): the event is then prepared in parts, one per chunk, and becomes chunk points
    plus a document point (``transforms.documents``); with chunking off it is truncated, and says so."""

    modalities = frozenset({Modality.TEXT})
    stage = "text"

    def __init__(self, model: ModelSettings, pipeline: PipelineSettings) -> None:
        self._model = model
        self.window = pipeline.sort_window
        self.max_batch_cost = pipeline.max_batch_tokens
        self.max_batch_size = pipeline.max_batch_size

    def load(self) -> list[Space]:
        model = self._model
        self._encoder = TextEncoder.from_settings(model)
        self._bm25 = Bm25() if model.bm25 else None
        self._chunker = chunker_for(self._encoder, model)
        return [Space(self._encoder.space, self._encoder.manifest.ref, self._encoder.dim)]

    def sparse(self, text: str) -> dict[str, SparseVector]:
        if self._bm25 is None:
            return {}
        return {BM25_SPACE: self._bm25.document(text)}

    def prepare(self, events: list[ParsedEvent]) -> list[Prepared]:
        texts = [event.envelope.text or "" for event in events]
        tokens = self._encoder.prepare(texts)
        limit = self._encoder.max_tokens
        return [
            Prepared(ids, len(ids)) if len(ids) < limit else self._long(text, ids)
            for text, ids in zip(texts, tokens, strict=True)
        ]

    def _long(self, text: str, ids: list[int]) -> Prepared:
        """A text that filled the model's input: its chunks (when it has more than one), or it truncated."""
        if self._chunker is None:
            return Prepared(ids, len(ids), fields={"truncated": True})
        chunks = self._chunker.chunks(text)
        if len(chunks) <= 1:
            return Prepared(ids, len(ids))
        parts = self._encoder.prepare([chunk.text for chunk in chunks])
        units = tuple(Prepared(p, len(p), {"chunk": c}) for p, c in zip(parts, chunks, strict=True))
        return Prepared(None, sum(unit.cost for unit in units), parts=units)

    def document(
        self, event: ParsedEvent, prepared: Prepared, rows: list[dict[str, np.ndarray]], refs: dict[str, str], at: str
    ) -> list[Any]:
        chunks = [unit.facts["chunk"] for unit in prepared.parts]
        return document_points(event, chunks, rows, refs, at, self.sparse)

    def encode(self, items: list[Any]) -> dict[str, np.ndarray]:
        return {self._encoder.space: self._encoder.embed_batch(items)}


class MediaAdapter(ModalityAdapter):
    """The shared half of pictures and sounds: bytes fetched (inline, file, or http when allowed) and decoded
    in the pool, a decoder failure an ``undecodable`` dead letter."""

    preparer = "decoder"
    failed_reason = Reason.UNDECODABLE
    failed_stage = "decode"

    def __init__(self, model: ModelSettings, media: MediaSettings, pipeline: PipelineSettings) -> None:
        # ORT's threads sleep between runs unless told otherwise: spinning, they take the cores the decoders need
        self._model = model.sleeping_unless_set()
        self._media = media
        self._max_event_bytes = pipeline.max_event_bytes
        self.window = media.batch_size
        self.prepare_threads = media.decode_threads
        self.prepare_timeout_s = media.decode_timeout_s
        self.max_batch_size = media.batch_size

    def prepare(self, events: list[ParsedEvent]) -> list[Prepared]:
        return [self.decode(content_bytes(event.envelope, self._media, self._max_event_bytes)) for event in events]

    def decode(self, data: bytes) -> Prepared:
        """One event's bytes → its prepared model input."""
        raise NotImplementedError


class ImageAdapter(MediaAdapter):
    """Pictures and video frames → the image model's space and (through ConSE) the text model's space."""

    modalities = frozenset({Modality.IMAGE, Modality.VIDEO_FRAME})
    stage = "image"

    def __init__(self, model: ModelSettings, media: MediaSettings, pipeline: PipelineSettings) -> None:
        super().__init__(model, media, pipeline)
        self.max_batch_cost = media.batch_size

    def load(self) -> list[Space]:
        """The image model's space, plus the text space through ``image_text_model`` — by its head graph on the
        image model's features when it has one for exactly this image model (the backbone then runs once)."""
        model = self._model
        backbone = self._backbone = ImageEncoder.load(model.cache_dir, model.image_model, model)
        spaces = [Space(backbone.space, backbone.manifest.ref, backbone.dim)]
        self._to_text: Callable[[list[Any], np.ndarray], np.ndarray] | None = None
        if model.image_text_model:
            manifest, folder = load_manifest_of(ImageManifest, model.cache_dir, model.image_text_model)
            if manifest.head is not None and manifest.head.input_model == backbone.manifest.ref:
                head = FeatureHead(manifest, folder, model)
                self._to_text = lambda pixels, raw: head.embed_features(raw)
            else:
                bridge = ImageEncoder.from_folder(manifest, folder, model)
                if bridge.spec != backbone.spec:
                    raise ModelKindError(f"{manifest.ref} and {backbone.manifest.ref} need different preprocessing")
                self._to_text = lambda pixels, raw: bridge.embed_batch(pixels)
            spaces.append(Space(manifest.space, manifest.ref, manifest.dim))
        self._spaces = spaces
        return spaces

    def decode(self, data: bytes) -> Prepared:
        image = decode_image(data, self._media.max_image_pixels, min_short_side=self._backbone.spec.resize_short)
        width, height = image.info[ORIGINAL_SIZE]
        facts: dict[str, Any] = {"width": width, "height": height}
        if self._media.previews:
            facts["thumbnail"] = thumbnail(image)
        (pixels,) = self._backbone.prepare([image])
        return Prepared(pixels, self._backbone.cost(pixels), facts)

    def encode(self, items: list[Any]) -> dict[str, np.ndarray]:
        raw = self._backbone.run(items)
        vectors = {self._spaces[0].name: self._backbone.finish(raw)}
        if self._to_text is not None:
            vectors[self._spaces[1].name] = self._to_text(items, raw)
        return vectors


class AudioAdapter(MediaAdapter):
    """Sounds and video audio segments → the audio model's space (mono, resampled, silence refused)."""

    modalities = frozenset({Modality.AUDIO, Modality.VIDEO_AUDIO})
    stage = "audio"

    def __init__(self, model: ModelSettings, media: MediaSettings, pipeline: PipelineSettings) -> None:
        super().__init__(model, media, pipeline)
        self.max_batch_cost = AudioEncoder.batch_cost

    def load(self) -> list[Space]:
        self._encoder = AudioEncoder.load(self._model.cache_dir, self._model.audio_model, self._model)
        return [Space(self._encoder.space, self._encoder.manifest.ref, self._encoder.dim)]

    def decode(self, data: bytes) -> Prepared:
        media, rate = self._media, self._encoder.sample_rate
        wave = decode_audio(data, rate, media.max_audio_seconds, media.silence_dbfs, media.min_audio_seconds)
        facts: dict[str, Any] = {"seconds": round(len(wave) / rate, 3)}
        if media.previews:
            facts["preview"] = sound_preview(wave, rate)
        (item,) = self._encoder.prepare([wave])
        return Prepared(item, self._encoder.cost(item), facts)

    def encode(self, items: list[Any]) -> dict[str, np.ndarray]:
        return {self._encoder.space: self._encoder.embed_batch(items)}
