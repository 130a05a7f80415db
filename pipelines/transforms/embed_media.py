"""Embed pictures (and video frames) and sounds (and video audio segments), decoding beside the encoder.

One DoFn per kind in the chain ``EmbedText → EmbedImages → EmbedAudio → Deliver``: each takes the parsed
events of its modalities and passes everything else (other events, points) straight through, so the whole
ingest stays one fused stage with no Flatten (see docs/architecture.md).

Decoding (fetch, Pillow / libsndfile, resize or resample) is submitted to a thread pool the moment an event
arrives; the encoder takes the oldest ``batch`` events only once twice that many are queued, so while ONNX
Runtime encodes one batch the pool is already decoding the next ones — the encoder does not wait on Pillow
when work is queued. Pillow, soxr and libsndfile release the GIL while they work.

Pictures run the EfficientNet backbone once for both of their spaces when the ConSE model ships a head graph
over the backbone's features (``HeadSpec``): half the encoder work of running both models.

Batches are by cost: after the crop every picture costs the encoder the same (224² pixels), so pictures batch
by count; a sound costs its number of 1.6 s partials (its seconds), and the audio encoder packs the partials of
a batch's clips into runs of at most 64 partials, whatever the clips' count or lengths. Every failure becomes
one dead letter with its reason (``MediaError``), an encoder failure on a batch is retried event by event, and
each vector passes the quality gate before it becomes part of a point.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import numpy as np

from embedstream.onnx_models.audio_encoder import AudioEncoder
from embedstream.onnx_models.image_encoder import FeatureHead, ImageEncoder, preprocess
from embedstream.onnx_models.registry import load_manifest
from embedstream.pipelines.media.audio import decode_audio
from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.media.fetch import content_bytes
from embedstream.pipelines.media.images import ORIGINAL_SIZE, decode_image
from embedstream.pipelines.media.previews import sound_preview, thumbnail
from embedstream.pipelines.observability import INGEST
from embedstream.pipelines.transforms.isolation import batch_or_each
from embedstream.pipelines.transforms.outputs import dead, windowed
from embedstream.pipelines.transforms.parse import ParsedEvent
from embedstream.pipelines.transforms.points import point_or_dead
from embedstream.pipelines.transforms.quality import vector_problem
from embedstream.schemas.dead_letter import Reason
from embedstream.schemas.envelope import Modality
from embedstream.schemas.settings import MediaSettings, ModelSettings, PipelineSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """Model input for one event plus facts for its payload (picture size, sound length)."""

    inputs: Any
    facts: dict[str, Any]


@dataclass(frozen=True)
class Space:
    """One vector a point gets: the space it lands in, the model ref its payload records, its dimension."""

    name: str
    ref: str
    dim: int


class EmbedMedia(beam.DoFn):
    """Base: queue → decode in a pool → encode in batches → points (or dead letters) in arrival order."""

    modalities: frozenset[Modality] = frozenset()
    stage = "media"

    def __init__(self, model: ModelSettings, media: MediaSettings, pipeline: PipelineSettings) -> None:
        self._model = model
        self._media = media
        self._pipeline = pipeline

    # --- what a kind defines ---
    def load_spaces(self) -> list[Space]:
        """Load the encoders; say which spaces every point of this kind gets."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Decoded:
        raise NotImplementedError

    def encode_batch(self, inputs: list[Any]) -> dict[str, np.ndarray]:
        """Every space's vectors for one batch of decoded inputs."""
        raise NotImplementedError

    @property
    def batch(self) -> int:
        return self._media.batch_size

    # --- the shared loop ---
    def setup(self) -> None:
        self._spaces = self.load_spaces()
        self._refs = {space.name: space.ref for space in self._spaces}
        self._pool = ThreadPoolExecutor(self._media.decode_threads, thread_name_prefix=f"decode-{self.stage}")

    def teardown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def start_bundle(self) -> None:
        self._queue: deque[tuple[ParsedEvent, Future[Decoded]]] = deque()

    def process(self, element: Any) -> Iterator[Any]:
        if not isinstance(element, ParsedEvent) or element.envelope.modality not in self.modalities:
            yield element
            return
        self._queue.append((element, self._pool.submit(self._fetch_and_decode, element)))
        if len(self._queue) >= 2 * self.batch:
            yield from self._encode_oldest(self.batch)

    def finish_bundle(self) -> Iterator[Any]:
        while self._queue:
            yield from windowed(self._encode_oldest(self.batch))

    def _resubmit_queued(self) -> None:
        """Events still queued behind a hung decode: their work goes to the new pool if it had not started."""
        for i, (event, future) in enumerate(self._queue):
            if future.cancel():
                self._queue[i] = (event, self._pool.submit(self._fetch_and_decode, event))

    def _fetch_and_decode(self, event: ParsedEvent) -> Decoded:
        return self.decode(content_bytes(event.envelope, self._media, self._pipeline.max_event_bytes))

    def _encode_oldest(self, count: int) -> Iterator[Any]:
        taken = [self._queue.popleft() for _ in range(min(count, len(self._queue)))]
        ready: list[tuple[ParsedEvent, Decoded]] = []
        for event, future in taken:
            try:
                ready.append((event, future.result(timeout=self._media.decode_timeout_s)))
            except FutureTimeout:
                # The thread cannot be stopped; leave it to finish (or hang) in a pool of its own so that the
                # events behind it, and shutdown, do not wait for it.
                self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(self._media.decode_threads, thread_name_prefix=f"decode-{self.stage}")
                self._resubmit_queued()
                message = f"fetching and decoding took longer than {self._media.decode_timeout_s}s"
                yield dead(event, Reason.DECODE_TIMEOUT, message, "decode")
            except MediaError as exc:
                yield dead(event, exc.reason, str(exc), "decode")
            except Exception as exc:  # a decoder bug must cost one event, not the bundle
                yield dead(event, Reason.UNDECODABLE, f"{type(exc).__name__}: {exc}", "decode")
        if not ready:
            return
        vectors, errors = self._encode([decoded.inputs for _, decoded in ready])
        ingested_at = datetime.now(UTC).isoformat()
        for i, (event, decoded) in enumerate(ready):
            if i in errors:
                yield dead(event, Reason.ENCODE_FAILED, errors[i], "encode")
                continue
            problem = next(
                (p for space in self._spaces if (p := vector_problem(vectors[space.name][i], space.dim))), None
            )
            if problem is not None:
                yield dead(event, problem[0], problem[1], "quality")
                continue
            point_vectors = {space.name: vectors[space.name][i] for space in self._spaces}
            yield point_or_dead(event, point_vectors, self._refs, ingested_at, extra=decoded.facts)

    def _encode(self, inputs: list[Any]) -> tuple[dict[str, list[np.ndarray]], dict[int, str]]:
        """Every space's vectors for the batch (zeros where an input failed); per-input errors."""
        rows, errors = batch_or_each(self._per_input, inputs, f"{self.stage} encoder")
        vectors = {
            space.name: [row[space.name] if row is not None else np.zeros(space.dim, np.float32) for row in rows]
            for space in self._spaces
        }
        return vectors, errors

    def _per_input(self, inputs: list[Any]) -> list[dict[str, np.ndarray]]:
        """``encode_batch`` timed, its space → matrix turned into one space → vector mapping per input."""
        started = time.perf_counter()
        by_space = self.encode_batch(inputs)
        INGEST.encoded(self.stage, len(inputs), time.perf_counter() - started)
        return [{name: matrix[i] for name, matrix in by_space.items()} for i in range(len(inputs))]


class EmbedImages(EmbedMedia):
    """Pictures and video frames → the image model's space and (through ConSE) the text model's space."""

    modalities = frozenset({Modality.IMAGE, Modality.VIDEO_FRAME})
    stage = "image"

    def load_spaces(self) -> list[Space]:
        """The image model's space, plus the text space through ``image_text_model`` — by its head graph on the
        image model's features when it has one for exactly this image model (the backbone then runs once)."""
        model = self._model
        backbone = self._backbone = ImageEncoder.load(model.cache_dir, model.image_model, model)
        self._spec = backbone.spec
        spaces = [Space(backbone.manifest.space, backbone.manifest.ref, backbone.dim)]
        self._to_text: Callable[[list[Any], np.ndarray], np.ndarray] | None = None
        if model.image_text_model:
            manifest, folder = load_manifest(model.cache_dir, model.image_text_model)
            if manifest.head is not None and manifest.head.input_model == backbone.manifest.ref:
                head = FeatureHead(manifest, folder, model)
                self._to_text = lambda pixels, raw: head.embed_features(raw)
            else:
                bridge = ImageEncoder.from_folder(manifest, folder, model)
                if bridge.spec != self._spec:
                    raise ValueError(f"{manifest.ref} and {backbone.manifest.ref} need different preprocessing")
                self._to_text = lambda pixels, raw: bridge.embed_pixels(pixels)
            spaces.append(Space(manifest.space, manifest.ref, manifest.dim))
        return spaces

    def encode_batch(self, inputs: list[Any]) -> dict[str, np.ndarray]:
        raw = self._backbone.raw(inputs)
        vectors = {self._spaces[0].name: self._backbone.finish(raw)}
        if self._to_text is not None:
            vectors[self._spaces[1].name] = self._to_text(inputs, raw)
        return vectors

    def decode(self, data: bytes) -> Decoded:
        image = decode_image(data, self._media.max_image_pixels, min_short_side=self._spec.resize_short)
        width, height = image.info[ORIGINAL_SIZE]
        facts: dict[str, Any] = {"width": width, "height": height}
        if self._media.previews:
            facts["thumbnail"] = thumbnail(image)
        return Decoded(preprocess(image, self._spec), facts)


class EmbedAudio(EmbedMedia):
    """Sounds and video audio segments → the audio model's space (mono, resampled, silence refused)."""

    modalities = frozenset({Modality.AUDIO, Modality.VIDEO_AUDIO})
    stage = "audio"

    def load_spaces(self) -> list[Space]:
        self._encoder = AudioEncoder.load(self._model.cache_dir, self._model.audio_model, self._model)
        manifest = self._encoder.manifest
        return [Space(manifest.space, manifest.ref, manifest.dim)]

    def encode_batch(self, inputs: list[Any]) -> dict[str, np.ndarray]:
        return {self._spaces[0].name: self._encoder.embed(inputs)}

    def decode(self, data: bytes) -> Decoded:
        media, rate = self._media, self._encoder.sample_rate
        wave = decode_audio(data, rate, media.max_audio_seconds, media.silence_dbfs, media.min_audio_seconds)
        facts: dict[str, Any] = {"seconds": round(len(wave) / rate, 3)}
        if media.previews:
            facts["preview"] = sound_preview(wave, rate)
        return Decoded(wave, facts)
