"""torchvision checkpoints (VGG, ResNet) exported without torchvision (``onnx_models.export.torchvision_cnn``):
random weights saved in torchvision's layout, exported from the CLI with parity recorded, loaded strictly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedstream.onnx_models.image_encoder import ImageEncoder
from embedstream.onnx_models.manifest import ImageManifest
from embedstream.onnx_models.registry import load_manifest_of
from embedstream.pipelines.media.images import decode_image
from embedstream.workers.sample_media import sample_photos

pytestmark = pytest.mark.integration  # each test exports or loads a checkpoint with torch

# Tensors every torchvision checkpoint of the architecture has, with their shapes (torchvision's own names).
KNOWN = {
    "vgg11": {
        "features.0.weight": (64, 3, 3, 3),
        "features.18.weight": (512, 512, 3, 3),
        "classifier.6.weight": (1000, 4096),
    },
    "resnet50": {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer3.5.bn2.running_var": (256,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048),
    },
}


def checkpoint(arch: str, path: Path) -> Path:
    """Random weights (and batch-norm statistics) in torchvision's layout; the large classifier as an expanded
    constant, so the file stays small (its values do not reach the pooled features)."""
    import torch

    from embedstream.onnx_models.export.torchvision_cnn import build_module

    torch.manual_seed(0)
    state = build_module(arch).state_dict()
    for name, tensor in state.items():
        if name.startswith(("classifier.", "fc.")):
            state[name] = torch.zeros(1).expand(tensor.shape)
        elif "running_var" in name:
            state[name] = torch.rand(tensor.shape) + 0.5
        elif "running_mean" in name:
            state[name] = torch.randn(tensor.shape) * 0.1
    for name, shape in KNOWN[arch].items():
        assert tuple(state[name].shape) == shape, name
    torch.save(state, path)
    return path


def export(cache: Path, name: str, weights: Path, arch: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "embedstream.workers.cli", "models", "export", name]
    env = {**os.environ, "EMBEDSTREAM_MODEL__CACHE_DIR": str(cache)}
    return subprocess.run(
        [*command, "--source", str(weights), "--arch", arch], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("arch", ["vgg11", "resnet50"])
def test_a_torchvision_checkpoint_exports_with_parity(tmp_path, arch):
    cache = tmp_path / "cache"
    done = export(cache, f"pics-{arch}", checkpoint(arch, tmp_path / f"{arch}.pth"), arch)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest, folder = load_manifest_of(ImageManifest, cache, f"pics-{arch}")
    assert manifest.dim == (512 if arch == "vgg11" else 2048) and manifest.origin is not None
    assert manifest.parity is not None and manifest.parity.min_cosine >= 0.9999, manifest.parity
    encoder = ImageEncoder.from_folder(manifest, folder)
    photos = [decode_image(p.read_bytes(), 40_000_000, manifest.image.resize_short) for p in sample_photos().values()]
    vectors = encoder.embed(photos[:3])
    assert vectors.shape == (3, manifest.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    weights = checkpoint("vgg11", tmp_path / "vgg11.pth")
    done = export(tmp_path / "cache", "pics", weights, "resnet50")
    assert done.returncode == 2 and "is not a torchvision resnet50 checkpoint" in done.stderr
    assert "missing ['conv1.weight'" in done.stderr
    assert not (tmp_path / "cache" / "pics").exists()


class Payload:
    """Not a tensor: unpickling it would run code a checkpoint chose."""

    def __reduce__(self):
        return (print, ("a pickled checkpoint ran code",))


def test_a_pickled_checkpoint_is_one_line_refusal_never_advice_to_unpickle(tmp_path):
    import torch

    weights = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": Payload()}, weights)
    done = export(tmp_path / "cache", "pics", weights, "resnet50")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("embedstream: error:")]
    assert len(errors) == 1 and "loads weights only" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "weights_only=False" not in done.stderr
    assert "a pickled checkpoint ran code" not in done.stdout + done.stderr
