"""The runtime image encoder: Pillow preprocessing as the manifest says + ONNX Runtime (``onnx_models.encoder``).

Preprocessing is part of the model's contract (``ImageSpec``): RGB (grayscale, palette, CMYK and alpha are
converted; alpha is composited on white), short side resized, center crop, /255, standardized. Every picture
costs the same after the crop, so ``cost`` is 1 and batches are by count; on 2 cores EfficientNet-Lite0 gains
nothing from batches above 8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from embedstream.onnx_models.encoder import OnnxEncoder
from embedstream.onnx_models.manifest import ImageManifest, ImageSpec
from embedstream.onnx_models.registry import ModelNotBuiltError, load_manifest_of, matches_sha256
from embedstream.onnx_models.session import OrtSession, session_for
from embedstream.onnx_models.vectors import pool_features
from embedstream.schemas.defaults import MEDIA_BATCH_SIZE
from embedstream.schemas.settings import ModelSettings

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


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


class ImageEncoder(OnnxEncoder[Image.Image, np.ndarray]):
    """Encodes pictures into the manifest's space (rows L2-normalized when the manifest says)."""

    batch_cost = MEDIA_BATCH_SIZE
    batch_size = MEDIA_BATCH_SIZE

    def __init__(self, manifest: ImageManifest, session: OrtSession) -> None:
        super().__init__(manifest, session)
        self.image_manifest = manifest
        self.spec: ImageSpec = manifest.image

    @classmethod
    def from_folder(cls, manifest: ImageManifest, folder: Path, runtime: ModelSettings | None = None) -> ImageEncoder:
        return cls(manifest, session_for(folder / manifest.onnx_file, runtime))

    @classmethod
    def load(cls, cache_dir: Path, name: str, runtime: ModelSettings | None = None) -> ImageEncoder:
        manifest, folder = load_manifest_of(ImageManifest, cache_dir, name)
        return cls.from_folder(manifest, folder, runtime)

    def prepare(self, inputs: Sequence[Image.Image]) -> list[np.ndarray]:
        return [preprocess(image, self.spec) for image in inputs]

    def cost(self, item: np.ndarray) -> int:
        return 1

    def run(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """One ONNX Runtime run over preprocessed ``[3, crop, crop]`` arrays: pooled, not yet normalized."""
        features = np.asarray(self._run_graph({self._input_names[0]: np.stack(batch)}), dtype=np.float32)
        return features if self.manifest.pooled_in_graph else pool_features(features, self.image_manifest.pooling)


class FeatureHead:
    """A model's ``head`` graph: its vectors from another model's raw output (``HeadSpec``)."""

    def __init__(self, manifest: ImageManifest, folder: Path, runtime: ModelSettings | None = None) -> None:
        if manifest.head is None:
            raise ModelNotBuiltError(f"model {manifest.ref} has no head graph")
        path = folder / manifest.head.file
        if not matches_sha256(path, manifest.head.sha256):  # hashed once, then remembered by size and mtime
            raise ModelNotBuiltError(f"{path} does not match its manifest's sha256; rebuild {manifest.name}")
        self.manifest = manifest
        self.head = manifest.head
        self._session = session_for(path, runtime)

    def embed_features(self, raw: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([self.head.output], {self.head.input: raw})
        return np.asarray(out, dtype=np.float32)
