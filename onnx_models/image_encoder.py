"""The runtime image encoder: Pillow preprocessing as the manifest says + ONNX Runtime, via the shared batch loop.

Preprocessing is part of the model's contract (``ImageSpec``): RGB (grayscale, palette, CMYK and alpha are
converted; alpha is composited on white), short side resized, center crop, /255, standardized. Every image costs
the same after the crop, so batches are by count (``run_batches`` with unit cost); on 2 cores EfficientNet-Lite0
gains nothing from big batches (MACHINE_NOTES.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from embedstream.onnx_models.batching import run_batches
from embedstream.onnx_models.manifest import ImageSpec, ModelManifest
from embedstream.onnx_models.registry import ModelNotBuiltError, load_manifest, sha256_of
from embedstream.onnx_models.session import session_for
from embedstream.onnx_models.text_encoder import pool
from embedstream.schemas.settings import ModelSettings

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
BATCH = 8


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white (a transparent PNG is not a black square)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """One picture → a ``[3, crop, crop]`` float32 array as the model was trained on."""
    rgb = to_rgb(image)
    width, height = rgb.size
    scale = spec.resize_short / min(width, height)
    resized = rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))), RESAMPLE[spec.resample])
    left = (resized.width - spec.crop) // 2
    top = (resized.height - spec.crop) // 2
    cropped = resized.crop((left, top, left + spec.crop, top + spec.crop))
    scaled = np.asarray(cropped, dtype=np.float32) / np.float32(255.0)
    standardized = (scaled - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(standardized.transpose(2, 0, 1), dtype=np.float32)


def pool_image(features: np.ndarray, kind: str) -> np.ndarray:
    """Pool a vision model's raw output to ``[batch, dim]``: feature maps ``[b, c, h, w]`` (CNNs) by their spatial
    mean, token sequences ``[b, tokens, d]`` (ViTs) by ``mean`` over all tokens or ``cls`` (token 0)."""
    if features.ndim == 4:
        if kind != "mean":
            raise ValueError(f"feature maps pool by mean only, not {kind!r}")
        return features.mean(axis=(2, 3))
    if features.ndim == 3:
        return pool(features, np.ones(features.shape[:2], dtype=np.int64), kind)
    return features


class ImageEncoder:
    """Encodes pictures into the manifest's space (rows L2-normalized when the manifest says)."""

    def __init__(self, manifest: ModelManifest, session: object) -> None:
        if manifest.image is None:
            raise ValueError(f"model {manifest.ref} has no image spec; it is not an image model")
        self.manifest = manifest
        self.spec: ImageSpec = manifest.image
        self._session = session
        self._input = session.get_inputs()[0].name  # type: ignore[attr-defined]

    @classmethod
    def from_folder(cls, manifest: ModelManifest, folder: Path, runtime: ModelSettings | None = None) -> ImageEncoder:
        return cls(manifest, session_for(folder / manifest.onnx_file, runtime))

    @classmethod
    def load(cls, cache_dir: Path, name: str, runtime: ModelSettings | None = None) -> ImageEncoder:
        manifest, folder = load_manifest(cache_dir, name)
        return cls.from_folder(manifest, folder, runtime)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def raw(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """One ONNX Runtime run over preprocessed ``[3, crop, crop]`` arrays: pooled, not yet normalized."""
        (features,) = self._session.run([self.manifest.output], {self._input: np.stack(batch)})  # type: ignore[attr-defined]
        features = np.asarray(features, dtype=np.float32)
        return features if self.manifest.pooled_in_graph else pool_image(features, self.manifest.pooling)

    def finish(self, raw: np.ndarray) -> np.ndarray:
        if self.manifest.normalize and not self.manifest.normalized_in_graph:
            return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
        return raw

    def embed_pixels(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return self.finish(self.raw(batch))

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixels = [preprocess(image, self.spec) for image in images]
        return run_batches(pixels, [1] * len(pixels), self.embed_pixels, BATCH, BATCH)


class FeatureHead:
    """A model's ``head`` graph: its output from another model's raw output (``HeadSpec``)."""

    def __init__(self, manifest: ModelManifest, folder: Path, runtime: ModelSettings | None = None) -> None:
        if manifest.head is None:
            raise ValueError(f"model {manifest.ref} has no head graph")
        path = folder / manifest.head.file
        if sha256_of(path) != manifest.head.sha256:
            raise ModelNotBuiltError(f"{path} does not match its manifest's sha256; rebuild {manifest.name}")
        self.manifest = manifest
        self.head = manifest.head
        self._session = session_for(path, runtime)

    def embed_features(self, raw: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([self.head.output], {self.head.input: raw})
        return np.asarray(out, dtype=np.float32)
