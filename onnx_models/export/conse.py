"""``effnet-conse``: pictures into the ``minilm`` text space by convex combination of semantic embeddings (ConSE).

Norouzi et al. 2014: an image's vector is the classifier's top-k class probabilities times the embeddings of
those classes' names, ``f(x) = Σ_t p(y_t|x) · s(y_t) / Σ_t p(y_t|x)``, L2-normalized. Here the classifier is
EfficientNet-Lite0 (ImageNet-1k), ``s`` is ``minilm`` on ``"a photo of a <class lemmas>"`` and k = 10; the whole
thing — network, softmax, top-k, the 1000×384 class-embedding table, the weighted sum and the normalization — is
one ONNX graph, so running it needs no text model. A text query embedded by ``minilm`` then finds pictures.

The class names ship in ``onnx_models/catalog/data/imagenet_classes.tsv`` (see ``SOURCES.md`` there).
The manifest's ``space_model`` is the ``minilm`` ref the table was built with: the space's version fence is
the text model's, so a rebuilt ``minilm`` version cannot be mixed with pictures mapped through the old one.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from onnx_models.catalog.entry import CatalogEntry
from onnx_models.export.common import compare, export_torch, install, versions
from onnx_models.export.efficientnet import IMAGENET, load_torch_model
from onnx_models.export.parity_inputs import parity_images
from onnx_models.image_encoder import ImageEncoder, preprocess
from onnx_models.manifest import ModelManifest, Origin, ParityReport
from onnx_models.registry import sha256_of
from onnx_models.text_encoder import TextEncoder

TOP_K = 10
PROMPT = "a photo of a {}"
CLASS_TABLE = "class_embeddings.npy"  # kept beside the graph for the parity reference and for inspection


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the classifier's output order (sorted WordNet ids)."""
    table = resources.files("onnx_models.catalog").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in table.splitlines() if line]
    if [int(index) for index, _, _ in rows] != list(range(1000)):
        raise ValueError("imagenet_classes.tsv must list classes 0..999 in order")
    return [names for _, _, names in rows]


def class_embeddings(text_encoder: TextEncoder) -> np.ndarray:
    return text_encoder.embed([PROMPT.format(name) for name in imagenet_class_names()]).astype(np.float32)


def conse(probabilities: np.ndarray, table: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """The ConSE formula in numpy (the parity reference for the graph)."""
    top = np.argsort(-probabilities, axis=1)[:, :k]
    weights = np.take_along_axis(probabilities, top, axis=1)
    mixed = np.einsum("bk,bkd->bd", weights, table[top]) / weights.sum(axis=1, keepdims=True)
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


def conse_parity(manifest: ModelManifest, folder: Path) -> ParityReport:
    """The ONNX graph against PyTorch's classifier probabilities + the ConSE formula in numpy."""
    import torch

    pixels = [preprocess(image, IMAGENET) for image in parity_images()]
    with torch.no_grad():
        logits = load_torch_model().eval()(torch.from_numpy(np.stack(pixels)))  # type: ignore[attr-defined]
    probabilities = torch.softmax(logits, dim=-1).numpy().astype(np.float64)
    expected = conse(probabilities, np.load(folder / CLASS_TABLE).astype(np.float64))
    actual = ImageEncoder.from_folder(manifest, folder).embed_pixels(pixels)
    return compare(actual, expected, "PyTorch efficientnet-lite-pytorch classifier + ConSE in numpy")


def build_conse(entry: CatalogEntry, cache_dir: Path) -> ModelManifest:
    import torch

    from onnx_models.export import build

    text_manifest = build(entry.space, cache_dir)  # the space's model: built first when missing
    table = class_embeddings(TextEncoder.load(cache_dir, text_manifest.ref))

    class ConSE(torch.nn.Module):
        def __init__(self, classifier: Any, embeddings: np.ndarray) -> None:
            super().__init__()
            self.classifier = classifier
            self.table: torch.Tensor
            self.register_buffer("table", torch.from_numpy(embeddings))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            probabilities = torch.softmax(self.classifier(pixels), dim=-1)
            weights, classes = torch.topk(probabilities, TOP_K, dim=-1)
            mixed = (weights.unsqueeze(-1) * self.table[classes]).sum(1) / weights.sum(-1, keepdim=True)
            return mixed / torch.linalg.vector_norm(mixed, dim=-1, keepdim=True)

    with tempfile.TemporaryDirectory(prefix=f"embedstream-{entry.name}-") as tmp:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        np.save(staging / CLASS_TABLE, table)
        export_torch(
            ConSE(load_torch_model(), table),
            (torch.zeros(1, 3, IMAGENET.crop, IMAGENET.crop),),
            staging / "model.onnx",
            ["pixel_values"],
            "embedding",
            {"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
        )
        draft = ModelManifest(
            name=entry.name,
            version=entry.version,
            modality="image",
            space=entry.space,
            space_model=text_manifest.ref,
            sha256=sha256_of(staging / "model.onnx"),
            inputs=["pixel_values"],
            output="embedding",
            dim=text_manifest.dim,
            pooling="none",
            pooled_in_graph=True,
            normalize=True,
            normalized_in_graph=True,
            image=IMAGENET,
            origin=Origin(recipe=entry.recipe),
            source=f"{entry.source}; class table from {text_manifest.ref} on '{PROMPT}', top-{TOP_K}",
            license=entry.license,
            built_with=versions("torch", "onnxruntime", "efficientnet-lite-pytorch"),
        )
        return install(draft, staging, cache_dir, conse_parity)
