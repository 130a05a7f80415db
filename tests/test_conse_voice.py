"""The catalog's cross-modal and audio models: effnet-conse (pictures in the minilm text space) and voice
(resemblyzer), built from pip-shipped weights; real photos from scikit-image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from embedstream.onnx_models.audio_encoder import AudioEncoder, power_mel
from embedstream.onnx_models.export import build
from embedstream.onnx_models.export.conse import imagenet_class_names
from embedstream.onnx_models.image_encoder import ImageEncoder
from embedstream.onnx_models.manifest import ImageManifest
from embedstream.onnx_models.registry import load_manifest_of
from embedstream.onnx_models.text_encoder import TextEncoder

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "camera", "hubble_deep_field")


@pytest.fixture(scope="module")
def conse(model_cache):
    build("effnet-conse", model_cache)
    return ImageEncoder.load(model_cache, "effnet-conse")


@pytest.fixture(scope="module")
def voice(model_cache):
    build("voice", model_cache)
    return AudioEncoder.load(model_cache, "voice")


def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()) for name in PHOTOS}


@pytest.mark.unit
def test_class_names_ship_in_classifier_order():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0].startswith("tench") and "tabby" in names[281]


@pytest.mark.integration
def test_conse_lives_in_the_minilm_space_and_is_fenced_to_it(conse, model_cache):
    manifest = conse.manifest
    assert manifest.space == "minilm" and manifest.space_ref == "minilm@1" and manifest.dim == 384
    assert manifest.parity is not None and manifest.parity.min_cosine >= 0.9999
    vectors = conse.embed(list(photos().values()))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("query", "expected"),
    [("a photo of a cat", "chelsea"), ("a cup of coffee", "coffee"), ("a rocket launch", "rocket")],
)
def test_a_text_query_finds_the_photo(conse, model_cache, query, expected):
    images = photos()
    vectors = conse.embed(list(images.values()))
    query_vector = TextEncoder.load(model_cache, "minilm").embed([query])[0]
    ranked = [list(images)[i] for i in np.argsort(-(vectors @ query_vector))]
    assert ranked[0] == expected, ranked


def voiced(seconds: float, pitch: float, seed: int, rate: int = 16_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(pitch * (1 + 0.05 * np.sin(2 * np.pi * 4 * t))) / rate
    wave = sum(np.sin(h * phase) * rng.uniform(0.2, 1.0) / h for h in range(1, 10)) * 0.2
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.integration
def test_voice_equals_resemblyzer_on_new_clips(voice):
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    reference = VoiceEncoder(device="cpu", verbose=False)
    clips = [voiced(3.3, 130.0, 1), voiced(0.9, 240.0, 2), voiced(7.1, 180.0, 3) * 0.02]
    expected = np.stack([reference.embed_utterance(normalize_volume(c, -30, increase_only=True)) for c in clips])
    np.testing.assert_allclose(voice.embed(clips), expected, atol=1e-4)


@pytest.mark.integration
def test_voice_clip_vector_does_not_depend_on_its_batch(voice):
    """Partials of many clips share ONNX runs; each clip's mean must only use its own partials."""
    clips = [voiced(2.0, 120.0, 4), voiced(5.5, 200.0, 5), voiced(1.2, 160.0, 6)]
    together = voice.embed(clips)
    alone = np.stack([voice.embed([c])[0] for c in clips])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert voice.manifest.dim == 256 and voice.manifest.audio is not None


@pytest.mark.integration
def test_numpy_mel_equals_librosa(voice):
    import librosa

    wave = voiced(1.37, 150.0, 9)
    spec = voice.manifest.audio
    filters = librosa.filters.mel(sr=16_000, n_fft=spec.n_fft, n_mels=spec.n_mels)
    expected = librosa.feature.melspectrogram(
        y=wave, sr=16_000, n_fft=spec.n_fft, hop_length=spec.hop_length, n_mels=40
    )
    ours = power_mel(wave, filters.astype(np.float32), spec.n_fft, spec.hop_length)
    np.testing.assert_allclose(ours, expected.T, rtol=1e-3, atol=1e-6)


def cli(*args: str, cache) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EMBEDSTREAM_MODEL__CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "embedstream.workers.cli", "models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.integration
def test_verify_passes_and_catches_a_damaged_front_end(voice, model_cache, tmp_path):
    done = cli("verify", "voice", cache=model_cache)
    assert done.returncode == 0, done.stderr
    assert "voice@1: sha256 ok" in done.stdout and "OK" in done.stdout

    # a copy whose mel filter bank was damaged: the graph's sha256 still matches, parity must not
    shutil.copytree(model_cache / "voice", tmp_path / "voice")
    filters = tmp_path / "voice" / "1" / "mel_filters.npy"
    np.save(filters, np.load(filters)[::-1].copy())
    damaged = cli("verify", "voice", cache=tmp_path)
    assert damaged.returncode == 1 and "FAILED" in damaged.stdout

    # a changed graph is refused before any parity run
    (tmp_path / "voice" / "1" / "model.onnx").write_bytes(b"not a model")
    tampered = cli("verify", "voice", cache=tmp_path)
    assert tampered.returncode == 2 and "sha256" in tampered.stderr


@pytest.mark.integration
def test_list_shows_every_catalog_model(conse, voice, model_cache):
    listed = cli("list", cache=model_cache)
    assert listed.returncode == 0
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "minilm" in rows["effnet-conse@1"] and "audio" in rows["voice@1"] and "parity" in rows["voice@1"]


@pytest.mark.integration
def test_the_head_on_effnet_features_equals_the_whole_graph(conse, model_cache):
    """The pipeline runs the backbone once and the ConSE head on its features: same vectors as the whole graph."""
    from embedstream.onnx_models.image_encoder import FeatureHead, preprocess

    effnet = ImageEncoder.load(model_cache, "effnet")
    assert conse.manifest.head is not None and conse.manifest.head.input_model == effnet.manifest.ref
    head = FeatureHead(*load_manifest_of(ImageManifest, model_cache, "effnet-conse"))
    pixels = [preprocess(image, conse.spec) for image in photos().values()]
    np.testing.assert_allclose(head.embed_features(effnet.run(pixels)), conse.embed_batch(pixels), atol=1e-5)
