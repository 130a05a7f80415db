"""Export Hugging Face vision (DINOv2, ResNet, ViT, ConvNeXt…) and speech (wav2vec2, HuBERT, WavLM…) encoders.

optimum writes the ``feature-extraction`` graph (``last_hidden_state``); pooling and normalization run in numpy
after ONNX Runtime as the manifest says: feature maps by their spatial mean, token sequences by ``cls`` or
``mean``, speech frames by their mean over time. Preprocessing comes from the model's own processor config:

- images: ``size.shortest_edge`` + ``crop_size`` (CLIP, DINOv2/BiT), ``shortest_edge`` + ``crop_pct`` (ConvNeXt,
  ResNet: resize to ``shortest_edge / crop_pct``, crop ``shortest_edge``), or ``height``/``width`` (ViT: we
  centre-crop a square where ViT's processor squashes — the same for square pictures, recorded as a choice);
- audio: ``sampling_rate`` and ``do_normalize`` (per-clip standardization).

Parity: ONNX Runtime against the PyTorch model on the same preprocessed inputs, pooled the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstream.onnx_models.audio_encoder import AudioEncoder
from embedstream.onnx_models.export.drafts import hf_config, hf_draft, versions
from embedstream.onnx_models.export.graphs import optimum_export, staging_dir
from embedstream.onnx_models.export.parity import compare, install
from embedstream.onnx_models.export.parity_inputs import parity_images, parity_waves
from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess
from embedstream.onnx_models.manifest import (
    AudioManifest,
    AudioSpec,
    ImageManifest,
    ImageSpec,
    ManifestBase,
    ModelManifest,
    Origin,
    ParityReport,
    as_kind,
)
from embedstream.onnx_models.session import session_for
from embedstream.onnx_models.vectors import Pooling, l2_normalize, pool_features
from embedstream.schemas.errors import UsageError

RESAMPLE: dict[int, Literal["bilinear", "bicubic"]] = {2: "bilinear", 3: "bicubic"}


def processor_config(source: str) -> dict[str, Any]:
    """The model's preprocessor config as a dict (image processor or feature extractor), from local files only."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor

    try:
        return dict(AutoImageProcessor.from_pretrained(source, local_files_only=True).to_dict())
    except (OSError, ValueError):
        return dict(AutoFeatureExtractor.from_pretrained(source, local_files_only=True).to_dict())


def image_spec(config: dict[str, Any]) -> ImageSpec:
    """Our ``ImageSpec`` from a Hugging Face image processor config (see the module docstring for the rules)."""
    size, crop_size = config.get("size") or {}, config.get("crop_size") or {}
    resample = RESAMPLE.get(int(config.get("resample", 3)))
    if resample is None:
        raise UsageError(f"unsupported resample filter {config.get('resample')!r}; expected bilinear or bicubic")
    if "shortest_edge" in size and "crop_pct" in config and config.get("crop_pct"):
        crop = int(size["shortest_edge"])
        resize = int(crop / float(config["crop_pct"])) if crop < 384 else crop
    elif "shortest_edge" in size:
        resize = int(size["shortest_edge"])
        crop = int(crop_size.get("height", resize)) if config.get("do_center_crop", True) else resize
    elif "height" in size:
        resize = crop = int(size["height"])
    else:
        raise UsageError(f"unsupported image processor size {size!r}")
    mean, std = config.get("image_mean"), config.get("image_std")
    if not mean or not std or len(mean) != 3 or len(std) != 3:
        raise UsageError("the image processor must give a 3-channel image_mean and image_std")
    return ImageSpec(
        resize_short=resize,
        crop=crop,
        resample=resample,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
    )


def audio_spec(config: dict[str, Any]) -> AudioSpec:
    return AudioSpec(
        sample_rate=int(config.get("sampling_rate", 16_000)),
        front_end="waveform",
        standardize=bool(config.get("do_normalize", False)),
    )


def _probe_dim(staging: Path, feed: dict[str, np.ndarray], pooling: Pooling) -> int:
    """The pooled output width, read off one ONNX Runtime run (configs name it differently per family)."""
    (output,) = session_for(staging / "model.onnx").run(["last_hidden_state"], feed)
    return int(pool_features(np.asarray(output), pooling).shape[-1])


def export_image_model(
    source: str, name: str, cache_dir: Path, pooling: Literal["mean", "cls"] = "mean", normalize: bool = True
) -> ModelManifest:
    spec = image_spec(processor_config(source))
    with staging_dir(name) as staging:
        inputs = optimum_export(source, staging)
        probe = {inputs[0]: np.zeros((1, 3, spec.crop, spec.crop), dtype=np.float32)}
        draft = hf_draft(
            name,
            source,
            staging,
            inputs,
            modality="image",
            dim=_probe_dim(staging, probe, pooling),
            pooling=pooling,
            normalize=normalize,
            image=spec,
            origin=Origin(recipe="hf_image", source=source),
        )
        return install(draft, staging, cache_dir, image_parity)


def export_audio_model(source: str, name: str, cache_dir: Path, normalize: bool = True) -> ModelManifest:
    spec = audio_spec(processor_config(source))
    with staging_dir(name) as staging:
        inputs = optimum_export(source, staging)
        draft = hf_draft(
            name,
            source,
            staging,
            inputs,
            modality="audio",
            dim=int(hf_config(source).hidden_size),
            pooling="mean",
            normalize=normalize,
            audio=spec,
            origin=Origin(recipe="hf_audio", source=source),
        )
        return install(draft, staging, cache_dir, audio_parity)


def _torch_model(manifest: ManifestBase) -> Any:
    from transformers import AutoModel

    return AutoModel.from_pretrained(manifest.source_folder, local_files_only=True).eval()


def _finish(rows: np.ndarray, normalize: bool) -> np.ndarray:
    return l2_normalize(rows) if normalize else rows


def image_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    import torch

    manifest = as_kind(any_manifest, ImageManifest)
    pixels = [preprocess(image, manifest.image) for image in parity_images()]
    with torch.no_grad():
        hidden = _torch_model(manifest)(pixel_values=torch.from_numpy(np.stack(pixels))).last_hidden_state.numpy()
    expected = _finish(pool_features(hidden, manifest.pooling), manifest.normalize)
    actual = ImageEncoder.from_folder(manifest, folder).embed_batch(pixels)
    return compare(actual, expected, f"PyTorch transformers {versions('transformers')['transformers']}")


def audio_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    import torch

    manifest = as_kind(any_manifest, AudioManifest)
    model, rows = _torch_model(manifest), []
    waves = parity_waves(manifest.audio.sample_rate)
    for wave in waves:
        samples = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7) if manifest.audio.standardize else wave
        with torch.no_grad():
            hidden = model(input_values=torch.from_numpy(samples[None].astype(np.float32))).last_hidden_state
        rows.append(hidden.numpy().mean(axis=1)[0])
    expected = _finish(np.stack(rows), manifest.normalize)
    actual = AudioEncoder.from_folder(manifest, folder).embed(waves)
    return compare(actual, expected, f"PyTorch transformers {versions('transformers')['transformers']}")
