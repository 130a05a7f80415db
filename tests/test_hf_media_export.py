"""Generic export of vision, speech and dual (CLIP) encoders: tiny random DINOv2, ResNet, wav2vec2 and CLIP built
from configs here; ONNX Runtime must equal the PyTorch model with the same pooling."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from embedstream.onnx_models.audio_encoder import AudioEncoder
from embedstream.onnx_models.corpus import corpus_texts as sample_texts
from embedstream.onnx_models.encoders import load_encoder
from embedstream.onnx_models.export.hf import export_model, modality_of
from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess
from embedstream.onnx_models.manifest import AudioManifest, as_kind
from embedstream.onnx_models.text_encoder import TextEncoder
from tests.tiny_models import tiny_resnet, tiny_wav2vec2

pytestmark = pytest.mark.integration

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def pictures() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [
        Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize((90, 60), Image.Resampling.BICUBIC),
        Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8)),  # grayscale
    ]


def tiny_dinov2(folder):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model
    from transformers.image_utils import PILImageResampling

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=56, patch_size=14
    )
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 64},
        crop_size={"height": 56, "width": 56},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        resample=PILImageResampling.BICUBIC,
    ).save_pretrained(folder)


def tiny_clip(folder):
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        sample_texts(), vocab_size=300, min_frequency=1, special_tokens=["<|startoftext|>", "<|endoftext|>"]
    )
    bos, eos = bpe.token_to_id("<|startoftext|>"), bpe.token_to_id("<|endoftext|>")
    bpe._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 64,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def made(tmp_path, name, maker):
    folder = tmp_path / name
    folder.mkdir()
    torch.manual_seed(0)
    maker(folder)
    return str(folder)


@pytest.mark.parametrize(
    ("family", "maker", "pooling", "crop"), [("dinov2", tiny_dinov2, "cls", 56), ("resnet", tiny_resnet, "mean", 64)]
)
def test_vision_encoder_equals_pytorch(tmp_path, family, maker, pooling, crop):
    from transformers import AutoModel

    source = made(tmp_path, family, maker)
    assert modality_of(source) == "image"
    (manifest,) = export_model(source, family, tmp_path / "cache", pooling=pooling)
    assert manifest.parity is not None and manifest.parity.min_cosine >= 0.9999
    assert manifest.modality == "image" and manifest.dim == 32 and manifest.image is not None
    assert manifest.image.crop == crop  # ResNet: shortest_edge / crop_pct, then the crop; DINOv2: crop_size

    encoder = load_encoder(tmp_path / "cache", family)
    assert isinstance(encoder, ImageEncoder)
    images = pictures()
    pixels = torch.from_numpy(np.stack([preprocess(i, manifest.image) for i in images]))
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(source).eval()(pixel_values=pixels).last_hidden_state.numpy()
    expected = hidden[:, 0] if pooling == "cls" else hidden.mean(axis=(2, 3))
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.embed(images), expected, atol=1e-4)


def test_speech_encoder_equals_pytorch_mean_over_frames(tmp_path):
    from transformers import AutoModel

    source = made(tmp_path, "w2v", tiny_wav2vec2)
    assert modality_of(source) == "audio"
    (exported,) = export_model(source, "w2v", tmp_path / "cache")
    manifest = as_kind(exported, AudioManifest)
    assert manifest.audio.sample_rate == 16_000 and manifest.audio.standardize
    encoder = load_encoder(tmp_path / "cache", "w2v")
    assert isinstance(encoder, AudioEncoder)
    rng = np.random.default_rng(5)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4_000, 12_345)]
    model = AutoModel.from_pretrained(source).eval()
    rows = []
    for clip in clips:
        standardized = (clip - clip.mean()) / np.sqrt(clip.var() + 1e-7)
        with torch.no_grad():
            rows.append(model(input_values=torch.from_numpy(standardized[None])).last_hidden_state.numpy().mean(1)[0])
    expected = np.stack(rows) / np.linalg.norm(rows, axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.embed(clips), expected, atol=1e-4)


def test_clip_towers_share_one_space(tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    source = made(tmp_path, "clip", tiny_clip)
    assert modality_of(source) == "dual"
    text_manifest, image_manifest = export_model(source, "clip", tmp_path / "cache")
    assert (text_manifest.ref, image_manifest.ref) == ("clip-text@1", "clip-image@1")
    assert text_manifest.space == image_manifest.space == "clip"
    assert text_manifest.space_ref == image_manifest.space_ref == "clip-text@1"

    texts = ["a photo of a cat", "trains and stations", "a"]
    text_vectors = load_encoder(tmp_path / "cache", "clip-text").embed(texts)
    image_encoder = load_encoder(tmp_path / "cache", "clip-image")
    assert isinstance(image_encoder, ImageEncoder)
    images = pictures()
    image_vectors = image_encoder.embed(images)

    # CLIP's own similarity: logits_per_text / logit_scale is the cosine of the projected towers
    model = CLIPModel.from_pretrained(source).eval()
    tokens = AutoTokenizer.from_pretrained(source)(texts, padding=True, return_tensors="pt")
    pixels = torch.from_numpy(np.stack([preprocess(i, image_encoder.spec) for i in images]))
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
    expected = (out.logits_per_text / model.logit_scale.exp()).detach().numpy()
    np.testing.assert_allclose(text_vectors @ image_vectors.T, expected, atol=1e-4)
    assert isinstance(load_encoder(tmp_path / "cache", "clip-text"), TextEncoder)


def test_cli_export_routes_a_vision_model(tmp_path):
    source = made(tmp_path, "resnet", tiny_resnet)
    env = dict(os.environ, EMBEDSTREAM_MODEL__CACHE_DIR=str(tmp_path / "cache"))
    run = [sys.executable, "-m", "embedstream.workers.cli", "models"]
    done = subprocess.run([*run, "export", "tinyres", "--source", source], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "tinyres@1: 32-d image model" in done.stdout
    verified = subprocess.run([*run, "verify", "tinyres"], env=env, capture_output=True, text=True)
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stderr
