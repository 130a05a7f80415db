"""torchvision CNN checkpoints (VGG, ResNet) → a picture encoder, without torchvision.

torchvision's wheels do not load beside the CPU torch pinned here (their compiled ops fail), so the library
cannot be the route; its checkpoints still can. The architectures are written here in plain torch with
torchvision's parameter names (``features.28.weight``, ``layer1.0.downsample.1.running_mean``…), a checkpoint
(``vgg16-397923af.pth`` or a fine-tune saved with ``torch.save(model.state_dict())``) is loaded **strictly** —
a missing, extra or misshapen tensor stops the export and names it — and the exported graph gives the pooled
features: the global average of the last feature map (VGG: 512-d, ResNet-50: 2048-d), what the classifier
reads. Preprocessing is torchvision's ImageNet one (resize 256, crop 224, ImageNet mean and std).

Parity: the ONNX graph against the same PyTorch module on the fixed synthetic pictures (recorded in the
manifest; ``models verify`` re-runs it from the checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstream.onnx_models.export.checkpoints import load_strictly, read_state
from embedstream.onnx_models.export.drafts import versions
from embedstream.onnx_models.export.graphs import export_torch, staging_dir
from embedstream.onnx_models.export.parity import compare, install
from embedstream.onnx_models.export.parity_inputs import parity_images
from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess
from embedstream.onnx_models.manifest import (
    ImageManifest,
    ImageSpec,
    ModelManifest,
    Origin,
    ParityReport,
    as_kind,
    make_manifest,
)
from embedstream.onnx_models.registry import sha256_of
from embedstream.onnx_models.vectors import l2_normalize
from embedstream.schemas.errors import UsageError

Arch = Literal["vgg11", "vgg16", "resnet50"]
ARCHS: tuple[Arch, ...] = ("vgg11", "vgg16", "resnet50")
TORCHVISION = ImageSpec(
    resize_short=256, crop=224, resample="bilinear", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
VGG_LAYERS: dict[str, list[int | str]] = {  # torchvision's configurations "A" and "D"
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3)}
DIMS = {"vgg11": 512, "vgg16": 512, "resnet50": 2048}


def build_module(arch: str) -> Any:
    """The architecture with torchvision's module names (so its state dicts load as they are)."""
    import torch
    from torch import nn

    class Vgg(nn.Module):
        def __init__(self, layers: list[int | str]) -> None:
            super().__init__()
            modules: list[nn.Module] = []
            channels = 3
            for layer in layers:
                if layer == "M":
                    modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    modules += [nn.Conv2d(channels, int(layer), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                    channels = int(layer)
            self.features = nn.Sequential(*modules)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(True),
                nn.Dropout(),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Dropout(),
                nn.Linear(4096, 1000),
            )

        def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
            features: torch.Tensor = self.features(pixels)
            return features.mean((2, 3))

    class Bottleneck(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample: nn.Module | None = None
            if stride != 1 or inplanes != planes * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * 4),
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            result: torch.Tensor = self.relu(out + identity)
            return result

    class ResNet(nn.Module):
        def __init__(self, blocks: tuple[int, ...]) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            inplanes = 64
            for n, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
                stride = 1 if n == 1 else 2
                layer = []
                for i in range(count):
                    layer.append(Bottleneck(inplanes, planes, stride if i == 0 else 1))
                    inplanes = planes * 4
                setattr(self, f"layer{n}", nn.Sequential(*layer))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(2048, 1000)

        def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(pixels))))
            for n in range(1, 5):
                x = getattr(self, f"layer{n}")(x)
            pooled: torch.Tensor = x.mean((2, 3))
            return pooled

    if arch in VGG_LAYERS:
        return Vgg(VGG_LAYERS[arch])
    if arch in RESNET_BLOCKS:
        return ResNet(RESNET_BLOCKS[arch])
    raise UsageError(f"--arch {arch!r}: one of {', '.join(ARCHS)}")


def load_checkpoint(arch: str, weights: Path) -> Any:
    """``build_module(arch)`` with the checkpoint's tensors, loaded strictly (the message names what differs)."""
    return load_strictly(build_module(arch), read_state(weights), f"{weights} is not a torchvision {arch} checkpoint")


def _arch_of(manifest: ModelManifest) -> str:
    origin = manifest.origin
    if origin is None or not origin.recipe.startswith("torchvision_"):
        raise UsageError(f"{manifest.ref} was not exported from a torchvision checkpoint")
    return origin.recipe.removeprefix("torchvision_")


def torchvision_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    import torch

    manifest = as_kind(any_manifest, ImageManifest)
    module = load_checkpoint(_arch_of(manifest), Path(manifest.source_folder))
    pixels = [preprocess(image, manifest.image) for image in parity_images()]
    with torch.no_grad():
        expected = module.pooled(torch.from_numpy(np.stack(pixels))).numpy()
    actual = ImageEncoder.from_folder(manifest, folder).embed_batch(pixels)
    reference = f"PyTorch {versions('torch')['torch']}, {_arch_of(manifest)} in plain torch"
    return compare(actual, l2_normalize(expected) if manifest.normalize else expected, reference)


def export_torchvision(weights: Path, arch: str, name: str, cache_dir: Path, normalize: bool = True) -> ModelManifest:
    """Export the checkpoint ``weights`` of ``arch`` as the picture encoder ``name@1`` (installed only if its
    parity against PyTorch reaches the bar)."""
    import torch

    module = load_checkpoint(arch, weights)

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = module

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            pooled: torch.Tensor = self.net.pooled(pixels)
            return pooled

    with staging_dir(name) as staging:
        export_torch(
            Pooled(),
            (torch.zeros(1, 3, TORCHVISION.crop, TORCHVISION.crop),),
            staging / "model.onnx",
            ["pixel_values"],
            "features",
            {"pixel_values": {0: "batch"}, "features": {0: "batch"}},
        )
        draft = make_manifest(
            name=name,
            version="1",
            space=name,
            modality="image",
            sha256=sha256_of(staging / "model.onnx"),
            inputs=["pixel_values"],
            output="features",
            dim=DIMS[arch],
            pooling="mean",
            pooled_in_graph=True,
            normalize=normalize,
            normalized_in_graph=False,
            image=TORCHVISION,
            origin=Origin(recipe=f"torchvision_{arch}", source=str(weights.resolve())),
            source=f"torchvision {arch} checkpoint {weights.name}",
            license="as the checkpoint's",
            built_with=versions("torch", "onnxruntime"),
        )
        return install(draft, staging, cache_dir, torchvision_parity)
