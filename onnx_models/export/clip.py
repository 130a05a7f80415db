"""Export a CLIP-style dual encoder as two models that share one space: ``<name>-text`` and ``<name>-image``.

Each tower is exported on its own with torch.onnx, projection included (``get_text_features`` /
``get_image_features``), so a text query runs only the text tower and a picture only the vision tower; both
manifests name the same ``space`` and fence it to the text tower's ref (``space_model``). Vectors are
L2-normalized in numpy, so their dot product is CLIP's cosine similarity. The text tower pools at the end-of-text
token inside the graph (CLIP's own rule); texts are right-padded with the tokenizer's pad id.

optimum exports CLIP only as one graph that needs both a text and a picture per call, which is why the towers
go through torch.onnx here. Parity: each tower against PyTorch, texts one at a time without padding.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstream.onnx_models.export.drafts import hf_config, versions
from embedstream.onnx_models.export.graphs import export_torch
from embedstream.onnx_models.export.hf_text import PARITY_TEXTS, pad_id, save_tokenizer
from embedstream.onnx_models.export.hf_vision_audio import image_spec, processor_config
from embedstream.onnx_models.export.parity import Parity, compare, install
from embedstream.onnx_models.export.parity_inputs import parity_images
from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess
from embedstream.onnx_models.manifest import (
    ImageManifest,
    ImageSpec,
    ManifestBase,
    ModelManifest,
    Origin,
    ParityReport,
    TextManifest,
    TokenizerSpec,
    as_kind,
    make_manifest,
)
from embedstream.onnx_models.registry import sha256_of
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.onnx_models.vectors import l2_normalize


def _clip(manifest: ManifestBase) -> Any:
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(manifest.source_folder, local_files_only=True).eval()


def text_tower_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    import torch
    from tokenizers import Tokenizer

    manifest = as_kind(any_manifest, TextManifest)
    model, rows = _clip(manifest), []
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=manifest.tokenizer.max_length)
    for text in PARITY_TEXTS:
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            rows.append(model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids)).numpy()[0])
    expected = l2_normalize(np.stack(rows)) if manifest.normalize else np.stack(rows)
    actual = TextEncoder.from_folder(manifest, folder).embed(list(PARITY_TEXTS))
    return compare(actual, expected, f"PyTorch transformers {versions('transformers')['transformers']} CLIP text")


def image_tower_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    import torch

    manifest = as_kind(any_manifest, ImageManifest)
    pixels = [preprocess(image, manifest.image) for image in parity_images()]
    with torch.no_grad():
        rows = _clip(manifest).get_image_features(pixel_values=torch.from_numpy(np.stack(pixels))).numpy()
    expected = l2_normalize(rows) if manifest.normalize else rows
    actual = ImageEncoder.from_folder(manifest, folder).embed_batch(pixels)
    return compare(actual, expected, f"PyTorch transformers {versions('transformers')['transformers']} CLIP vision")


def export_clip(source: str, name: str, cache_dir: Path, normalize: bool = True) -> list[ModelManifest]:
    """Both towers of the CLIP model at ``source`` → ``[<name>-text@1, <name>-image@1]`` in space ``name``."""
    from transformers import CLIPModel

    config = hf_config(source)
    return export_towers(
        CLIPModel.from_pretrained(source, local_files_only=True).eval(),
        Towers(
            name=name,
            source=source,
            tokenizer=lambda path: save_tokenizer(source, path),
            tokenizer_spec=TokenizerSpec(
                max_length=int(config.text_config.max_position_embeddings), pad_id=pad_id(source)
            ),
            image=image_spec(processor_config(source)),
            recipe="clip",
            described=f"CLIP model from {source}",
            text_parity=text_tower_parity,
            image_parity=image_tower_parity,
        ),
        cache_dir,
        normalize,
    )


@dataclass(frozen=True)
class Towers:
    """What a CLIP-layout model's towers are exported with, besides the model: the tokenizer (written into the
    text tower's folder), how texts are padded and cut, the picture preprocessing, and the recipe the manifests
    record (``<recipe>_text`` / ``<recipe>_image``, whose parity functions ``models verify`` re-runs)."""

    name: str
    source: str
    tokenizer: Callable[[Path], object]  # writes tokenizer.json at the path given
    tokenizer_spec: TokenizerSpec
    image: ImageSpec
    recipe: str
    described: str
    text_parity: Parity  # the towers' parity functions (``PARITY[<recipe>_text]``, ``_image`` in ``verify``)
    image_parity: Parity


def export_towers(model: Any, towers: Towers, cache_dir: Path, normalize: bool = True) -> list[ModelManifest]:
    """The text and image towers of ``model`` (a transformers ``CLIPModel``) as two models in one space, each
    installed only if its recipe's parity reaches the bar."""
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model  # a submodule, so its weights are parameters and not traced as constants

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            features: torch.Tensor = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
            return features

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            features: torch.Tensor = self.clip.get_image_features(pixel_values=pixel_values)
            return features

    name = towers.name
    text_name, image_name = f"{name}-text", f"{name}-image"
    common: dict[str, Any] = {
        "version": "1",
        "space": name,
        "space_model": f"{text_name}@1",
        "dim": int(model.config.projection_dim),
        "pooled_in_graph": True,
        "normalize": normalize,
        "normalized_in_graph": False,
        "source": towers.described,
        "license": "as the source model's",
        "built_with": versions("torch", "onnxruntime", "transformers"),
    }
    spec = towers.image
    built = []
    with tempfile.TemporaryDirectory(prefix=f"embedstream-{name}-") as tmp:
        text_dir, image_dir = Path(tmp) / "text", Path(tmp) / "image"
        text_dir.mkdir()
        image_dir.mkdir()
        ids = torch.ones(2, 5, dtype=torch.long)
        export_torch(
            TextTower(),
            (ids, torch.ones_like(ids)),
            text_dir / "model.onnx",
            ["input_ids", "attention_mask"],
            "text_embeds",
            {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
        )
        towers.tokenizer(text_dir / "tokenizer.json")
        text_draft = make_manifest(
            name=text_name,
            modality="text",
            sha256=sha256_of(text_dir / "model.onnx"),
            inputs=["input_ids", "attention_mask"],
            output="text_embeds",
            pooling="last_token",
            tokenizer=towers.tokenizer_spec,
            origin=Origin(recipe=f"{towers.recipe}_text", source=towers.source),
            **common,
        )
        built.append(install(text_draft, text_dir, cache_dir, towers.text_parity))
        export_torch(
            ImageTower(),
            (torch.zeros(1, 3, spec.crop, spec.crop),),
            image_dir / "model.onnx",
            ["pixel_values"],
            "image_embeds",
            {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
        )
        image_draft = make_manifest(
            name=image_name,
            modality="image",
            sha256=sha256_of(image_dir / "model.onnx"),
            inputs=["pixel_values"],
            output="image_embeds",
            pooling="cls",
            image=spec,
            origin=Origin(recipe=f"{towers.recipe}_image", source=towers.source),
            **common,
        )
        built.append(install(image_draft, image_dir, cache_dir, towers.image_parity))
    return built
