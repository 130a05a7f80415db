"""``effnet-conse``: pictures into the ``minilm`` text space by convex combination of semantic embeddings (ConSE).

Norouzi et al. 2014: an image's vector is the classifier's top-k class probabilities times the embeddings of
those classes' names, ``f(x) = Σ_t p(y_t|x) · s(y_t) / Σ_t p(y_t|x)``, L2-normalized. Here the classifier is
EfficientNet-Lite0 (ImageNet-1k), ``s`` is ``minilm`` on ``"a photo of a <class lemmas>"`` and k = 10; the whole
thing — network, softmax, top-k, the 1000×384 class-embedding table, the weighted sum and the normalization — is
one ONNX graph, so running it needs no text model. A text query embedded by ``minilm`` then finds pictures.

The class names ship in ``onnx_models/catalog/data/imagenet_classes.tsv`` (see ``SOURCES.md`` there).
The manifest's ``space_model`` is the ``minilm`` ref the table was built with: the space's version fence is
the text model's, so a rebuilt ``minilm`` version cannot be mixed with pictures mapped through the old one.

A second graph, ``head.onnx`` (``HeadSpec``), computes the same vector from ``effnet``'s pooled features (the
classifier's last layer reads exactly those): a pipeline writing both spaces runs the EfficientNet backbone
once per picture instead of twice. Parity covers both paths.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from embedstream.onnx_models.catalog.entry import CatalogEntry
from embedstream.onnx_models.export.drafts import catalog_draft, versions
from embedstream.onnx_models.export.efficientnet import IMAGENET, load_torch_model
from embedstream.onnx_models.export.graphs import export_torch, staging_dir
from embedstream.onnx_models.export.parity import compare, install
from embedstream.onnx_models.export.parity_inputs import parity_images
from embedstream.onnx_models.image_encoder import FeatureHead, ImageEncoder, preprocess
from embedstream.onnx_models.manifest import HeadSpec, ImageManifest, ModelManifest, ParityReport, as_kind
from embedstream.onnx_models.registry import load_manifest, sha256_of
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.onnx_models.vectors import l2_normalize

TOP_K = 10
PROMPT = "a photo of a {}"
CLASS_TABLE = "class_embeddings.npy"  # kept beside the graph for the parity reference and for inspection


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the classifier's output order (sorted WordNet ids)."""
    table = resources.files("embedstream.onnx_models.catalog").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
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
    return l2_normalize(mixed)


def conse_parity(manifest: ModelManifest, folder: Path) -> ParityReport:
    """Both ways of computing it — the whole graph on pixels, and the head on the pooled features (PyTorch's, which
    ``effnet``'s own parity ties to its ONNX output) — against PyTorch's classifier probabilities + the ConSE formula
    in numpy; the figure is the worse of the two."""
    import torch

    pixels = [preprocess(image, IMAGENET) for image in parity_images()]
    model: Any = load_torch_model()
    with torch.no_grad():
        batch = torch.from_numpy(np.stack(pixels))
        logits = model.eval()(batch)
        pooled = model.extract_features(batch).mean((2, 3)).numpy()
    probabilities = torch.softmax(logits, dim=-1).numpy().astype(np.float64)
    expected = conse(probabilities, np.load(folder / CLASS_TABLE).astype(np.float64))
    image = as_kind(manifest, ImageManifest)
    whole = ImageEncoder.from_folder(image, folder).embed_batch(pixels)
    via_head = FeatureHead(image, folder).embed_features(pooled)
    return compare(
        np.concatenate([whole, via_head]),
        np.concatenate([expected, expected]),
        "PyTorch efficientnet-lite-pytorch classifier + ConSE in numpy (whole graph and head on effnet)",
    )


def build_conse(entry: CatalogEntry, cache_dir: Path) -> ModelManifest:
    import torch

    text_manifest, _ = load_manifest(cache_dir, entry.space)  # the space's model (``entry.needs``: built first)
    backbone, _ = load_manifest(cache_dir, "effnet")  # the head reads its pooled features
    table = class_embeddings(TextEncoder.load(cache_dir, text_manifest.ref))

    class ConSE(torch.nn.Module):
        def __init__(self, classifier: Any, embeddings: np.ndarray) -> None:
            super().__init__()
            self.classifier = classifier
            self.table: torch.Tensor
            self.register_buffer("table", torch.from_numpy(embeddings))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return mix(torch.softmax(self.classifier(pixels), dim=-1), self.table)

    class ConSEHead(torch.nn.Module):
        """The same from pooled features: the classifier's last layer is ``_fc`` over them (dropout is off)."""

        def __init__(self, classifier: Any, embeddings: np.ndarray) -> None:
            super().__init__()
            self.fc = classifier._fc
            self.table: torch.Tensor
            self.register_buffer("table", torch.from_numpy(embeddings))

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return mix(torch.softmax(self.fc(features), dim=-1), self.table)

    def mix(probabilities: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        weights, classes = torch.topk(probabilities, TOP_K, dim=-1)
        mixed = (weights.unsqueeze(-1) * table[classes]).sum(1) / weights.sum(-1, keepdim=True)
        unit: torch.Tensor = mixed / torch.linalg.vector_norm(mixed, dim=-1, keepdim=True)
        return unit

    with staging_dir(entry.name) as staging:
        np.save(staging / CLASS_TABLE, table)
        classifier = load_torch_model()
        export_torch(
            ConSE(classifier, table),
            (torch.zeros(1, 3, IMAGENET.crop, IMAGENET.crop),),
            staging / "model.onnx",
            ["pixel_values"],
            "embedding",
            {"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
        )
        export_torch(
            ConSEHead(classifier, table),
            (torch.zeros(1, backbone.dim),),
            staging / "head.onnx",
            ["features"],
            "embedding",
            {"features": {0: "batch"}, "embedding": {0: "batch"}},
        )
        head = HeadSpec(
            sha256=sha256_of(staging / "head.onnx"), input_model=backbone.ref, input="features", output="embedding"
        )
        draft = catalog_draft(
            entry,
            staging,
            space_model=text_manifest.ref,
            inputs=["pixel_values"],
            output="embedding",
            dim=text_manifest.dim,
            pooled_in_graph=True,
            normalized_in_graph=True,
            image=IMAGENET,
            head=head,
            source=f"{entry.source}; class table from {text_manifest.ref} on '{PROMPT}', top-{TOP_K}",
            built_with=versions("torch", "onnxruntime", "efficientnet-lite-pytorch"),
        )
        return install(draft, staging, cache_dir, conse_parity)
