"""effnet: EfficientNet-Lite0 exported from the pip-shipped weights; ORT equals PyTorch; any picture mode works."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedstream.onnx_models.export import build
from embedstream.onnx_models.export.efficientnet import torch_features
from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def encoder(model_cache):
    build("effnet", model_cache)
    return ImageEncoder.load(model_cache, "effnet")


def picture(seed: int, size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # a few big blocks: a "scene", not pixel noise
    return Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)


def test_manifest_records_preprocessing_and_parity(encoder):
    manifest = encoder.manifest
    assert manifest.ref == "effnet@1" and manifest.dim == 1280 and manifest.modality == "image"
    assert manifest.image is not None and (manifest.image.resize_short, manifest.image.crop) == (256, 224)
    assert manifest.parity is not None and manifest.parity.min_cosine >= 0.9999


def test_onnx_equals_pytorch_on_new_pictures(encoder):
    images = [picture(7), picture(8, (500, 260))]
    np.testing.assert_allclose(
        encoder.embed(images), torch_features([preprocess(i, encoder.spec) for i in images]), atol=1e-4
    )


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_every_picture_mode_encodes(encoder, mode):
    image = picture(3).convert(mode) if mode != "I;16" else picture(3).convert("L").convert("I;16")
    vector = encoder.embed([image])[0]
    assert vector.shape == (1280,) and np.isfinite(vector).all()
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_a_crop_stays_closer_to_its_source_than_other_pictures(encoder):
    source, other = picture(11, (640, 480)), picture(12, (640, 480))
    crop = source.crop((60, 40, 600, 450)).resize((400, 300))
    source_v, other_v, crop_v = encoder.embed([source, other, crop])
    assert float(crop_v @ source_v) > float(crop_v @ other_v)
