"""``embedstream models verify NAME``: check a built model again, now, on this machine.

The ONNX file must still match its manifest's sha256 (``load_manifest``), and the parity check the build ran is
run again with the same recipe's parity function and reference implementation (needs the ``export`` extra).
A quantized variant is compared with its fp32 base on the sample corpus instead (cosine and recall@10), since
its bar is the recorded quality, not the parity bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedstream.onnx_models.export.clip import image_tower_parity, text_tower_parity
from embedstream.onnx_models.export.conse import conse_parity
from embedstream.onnx_models.export.efficientnet import efficientnet_parity
from embedstream.onnx_models.export.hf_text import torch_parity
from embedstream.onnx_models.export.hf_vision_audio import audio_parity, image_parity
from embedstream.onnx_models.export.open_clip import image_parity as open_clip_image_parity
from embedstream.onnx_models.export.open_clip import text_parity as open_clip_text_parity
from embedstream.onnx_models.export.parity import PARITY_MIN_COSINE, Parity
from embedstream.onnx_models.export.sentence_transformers import sentence_transformer_parity
from embedstream.onnx_models.export.torchvision_cnn import ARCHS, torchvision_parity
from embedstream.onnx_models.export.voice import voice_parity
from embedstream.onnx_models.export.word_vectors import word_vectors_parity
from embedstream.onnx_models.manifest import ModelManifest, ParityReport, TextManifest, VariantQuality, as_kind
from embedstream.onnx_models.registry import ModelNotBuiltError, load_manifest, load_manifest_of, sha256_of
from embedstream.schemas.errors import UsageError

PARITY: dict[str, Parity] = {
    "sentence_transformers": sentence_transformer_parity,
    "efficientnet_lite": efficientnet_parity,
    "conse": conse_parity,
    "resemblyzer": voice_parity,
    "hf_text": torch_parity,
    "hf_image": image_parity,
    "hf_audio": audio_parity,
    "clip_text": text_tower_parity,
    "clip_image": image_tower_parity,
    "open_clip_text": open_clip_text_parity,
    "open_clip_image": open_clip_image_parity,
    "word_vectors": word_vectors_parity,
    **{f"torchvision_{arch}": torchvision_parity for arch in ARCHS},
}

# a variant may lose this much cosine against what its build recorded before verify calls it changed
VARIANT_TOLERANCE = 0.002


@dataclass(frozen=True)
class Verdict:
    manifest: ModelManifest
    parity: ParityReport | None = None
    quality: VariantQuality | None = None

    @property
    def ok(self) -> bool:
        if self.parity is not None:
            return self.parity.min_cosine >= PARITY_MIN_COSINE
        if self.quality is None or self.manifest.quality is None:
            return False  # a variant whose build recorded no quality cannot be held to it
        return self.quality.min_cosine >= self.manifest.quality.min_cosine - VARIANT_TOLERANCE


def recipe_of(manifest: ModelManifest) -> str:
    from embedstream.onnx_models.catalog import CATALOG

    if manifest.origin is not None:
        return manifest.origin.recipe
    if manifest.name in CATALOG:  # catalog builds made before manifests recorded their origin
        return CATALOG[manifest.name].recipe
    raise UsageError(f"{manifest.ref} does not record how it was built; rebuild or re-export it to verify it")


def verify(cache_dir: Path, name: str) -> Verdict:
    manifest, folder = load_manifest(cache_dir, name, verify=False)
    if sha256_of(folder / manifest.onnx_file) != manifest.sha256:  # hashed in full here, whatever a stamp says
        raise ModelNotBuiltError(
            f"model {manifest.ref} at {folder / manifest.onnx_file} does not match its manifest's sha256; rebuild it "
            f"with `embedstream models build {manifest.name} --force`"
        )
    if manifest.variant_of is not None:
        from embedstream.onnx_models.export.quantize import compare_variant
        from embedstream.onnx_models.text_encoder import TextEncoder

        base, base_folder = load_manifest_of(TextManifest, cache_dir, manifest.variant_of)
        variant = as_kind(manifest, TextManifest)
        quality = compare_variant(TextEncoder.from_folder(base, base_folder), TextEncoder.from_folder(variant, folder))
        return Verdict(manifest, quality=quality)
    return Verdict(manifest, parity=PARITY[recipe_of(manifest)](manifest, folder))
