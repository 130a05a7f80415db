"""``embedstream models export``: one entry point for any local Hugging Face encoder, routed by what it is.

CLIP-style dual encoders (Hugging Face format, or a native OpenCLIP checkpoint: ``open_clip_config.json`` beside its
weights) → two tower models in one space; a model whose processor config has image statistics →
a vision encoder; one with a sampling rate → a speech encoder; anything else → a text encoder. The source is a
model folder, or a model id already in the local Hugging Face cache: nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from embedstream.onnx_models.export.drafts import hf_config
from embedstream.onnx_models.manifest import ModelManifest
from embedstream.schemas.errors import UsageError

Pooling = Literal["mean", "cls", "last_token"]
DUAL_ENCODERS = ("clip",)


def modality_of(source: str) -> Literal["open_clip", "dual", "image", "audio", "text"]:
    from embedstream.onnx_models.export.hf_vision_audio import processor_config
    from embedstream.onnx_models.export.open_clip import is_open_clip

    if is_open_clip(source):
        return "open_clip"
    if getattr(hf_config(source), "model_type", "") in DUAL_ENCODERS:
        return "dual"
    try:
        processor = processor_config(source)
    except (OSError, ValueError):
        return "text"
    if "image_mean" in processor:
        return "image"
    if "sampling_rate" in processor:
        return "audio"
    return "text"


def export_model(
    source: str, name: str, cache_dir: Path, pooling: Pooling = "mean", normalize: bool = True
) -> list[ModelManifest]:
    """Export ``source`` as model(s) named ``name`` into ``cache_dir``; each is installed only if its parity
    against PyTorch reaches ``PARITY_MIN_COSINE``."""
    kind = modality_of(source)
    if kind == "open_clip":
        from embedstream.onnx_models.export.open_clip import export_open_clip

        return export_open_clip(source, name, cache_dir, normalize=normalize)
    if kind == "dual":
        from embedstream.onnx_models.export.clip import export_clip

        return export_clip(source, name, cache_dir, normalize=normalize)
    if kind == "image":
        from embedstream.onnx_models.export.hf_vision_audio import export_image_model

        if pooling == "last_token":
            raise UsageError("vision encoders pool by mean or cls, not last_token")
        return [export_image_model(source, name, cache_dir, pooling=pooling, normalize=normalize)]
    if kind == "audio":
        from embedstream.onnx_models.export.hf_vision_audio import export_audio_model

        return [export_audio_model(source, name, cache_dir, normalize=normalize)]
    from embedstream.onnx_models.export.hf_text import export_text_model

    return [export_text_model(source, name, cache_dir, pooling=pooling, normalize=normalize)]
