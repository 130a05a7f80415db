"""One way to open any built model: the encoder class follows the manifest's kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedstream.onnx_models.audio_encoder import AudioEncoder
from embedstream.onnx_models.encoder import Encoder
from embedstream.onnx_models.image_encoder import ImageEncoder
from embedstream.onnx_models.manifest import AudioManifest, ImageManifest
from embedstream.onnx_models.registry import load_manifest
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.schemas.settings import ModelSettings

AnyEncoder = Encoder[Any, Any]


def load_encoder(cache_dir: Path, name: str, runtime: ModelSettings | None = None) -> AnyEncoder:
    """The verified build of ``name`` (``name`` or ``name@version``) as a text, image or audio encoder."""
    manifest, folder = load_manifest(cache_dir, name)
    if isinstance(manifest, ImageManifest):
        return ImageEncoder.from_folder(manifest, folder, runtime)
    if isinstance(manifest, AudioManifest):
        return AudioEncoder.from_folder(manifest, folder, runtime)
    return TextEncoder.from_folder(manifest, folder, runtime)
