"""The exported minilm model: parity with sentence-transformers, batching invariance, the manifest."""

from __future__ import annotations

import time

import numpy as np
import pytest

from embedstream.onnx_models.batching import plan_batches
from embedstream.onnx_models.export.sentence_transformers import PARITY_SENTENCES, sentence_transformer_parity
from embedstream.onnx_models.manifest import TextManifest
from embedstream.onnx_models.registry import ModelNotBuiltError, load_manifest, load_manifest_of, sha256_of
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.transforms.quality import vector_problem
from embedstream.schemas.dead_letter import Reason


@pytest.fixture(scope="module")
def encoder(model_cache):
    return TextEncoder.load(model_cache, "minilm")


@pytest.mark.integration
def test_manifest_records_what_the_run_needs(model_cache):
    manifest, folder = load_manifest_of(TextManifest, model_cache, "minilm")
    assert manifest.dim == 384 and manifest.space == "minilm" and manifest.ref == "minilm@1"
    assert manifest.tokenizer is not None and manifest.tokenizer.max_length == 256
    assert manifest.sha256 == sha256_of(folder / manifest.onnx_file)
    assert manifest.parity is not None and manifest.parity.min_cosine >= 0.9999
    assert manifest.parity.inputs == len(PARITY_SENTENCES)


@pytest.mark.integration
def test_parity_against_sentence_transformers_now(model_cache):
    manifest, folder = load_manifest_of(TextManifest, model_cache, "minilm")
    report = sentence_transformer_parity(manifest, folder)
    assert report.min_cosine >= 0.9999
    assert report.max_abs_diff < 1e-4


@pytest.mark.integration
def test_vectors_do_not_depend_on_batch_company(encoder):
    texts = ["short", "a somewhat longer sentence about trains and stations", "mid length text here", "x " * 300]
    together = encoder.embed(texts, max_batch_cost=100_000, max_batch_size=64)
    alone = np.stack([encoder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


@pytest.mark.integration
def test_truncates_long_text_at_the_manifest_limit(encoder):
    assert len(encoder.tokenize(["word " * 1000])[0]) == 256


@pytest.mark.integration
def test_damaged_model_file_is_refused(model_cache, tmp_path):
    manifest, folder = load_manifest_of(TextManifest, model_cache, "minilm")
    copy = tmp_path / "minilm" / manifest.version
    copy.mkdir(parents=True)
    for name in ("manifest.json", "tokenizer.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    (copy / manifest.onnx_file).write_bytes(b"not the model")
    with pytest.raises(ModelNotBuiltError, match="sha256"):
        load_manifest(tmp_path, "minilm")
    with pytest.raises(ModelNotBuiltError, match="embedstream models build"):
        load_manifest(tmp_path / "empty", "minilm")


@pytest.mark.unit
def test_plan_batches_respects_padded_token_budget():
    costs = [5, 40, 7, 38, 6, 100, 39, 8]
    plan = plan_batches(costs, max_batch_cost=90, max_batch_size=4)
    assert sorted(i for batch in plan for i in batch) == list(range(len(costs)))
    for batch in plan:
        widest = max(costs[i] for i in batch)
        assert len(batch) == 1 or len(batch) * widest <= 90
        assert len(batch) <= 4
    # length-sorted: similar lengths share a batch, so padding stays small
    assert {frozenset(b) for b in plan} >= {frozenset({0, 2, 4, 7}), frozenset({5})}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        (np.ones(3, dtype=np.float32), Reason.VECTOR_WRONG_DIM),
        (np.array([1.0, np.nan, 0.0, 0.0], dtype=np.float32), Reason.VECTOR_NON_FINITE),
        (np.array([1.0, np.inf, 0.0, 0.0], dtype=np.float32), Reason.VECTOR_NON_FINITE),
        (np.zeros(4, dtype=np.float32), Reason.VECTOR_ZERO_NORM),
        (np.ones((2, 2), dtype=np.float32), Reason.VECTOR_WRONG_DIM),
    ],
)
def test_quality_gate_rejects_bad_vectors(vector, reason):
    problem = vector_problem(vector, 4)
    assert problem is not None and problem[0] is reason


@pytest.mark.integration
def test_quality_gate_passes_real_vectors(encoder):
    assert vector_problem(encoder.embed(["a normal sentence"])[0], 384) is None


@pytest.mark.integration
def test_runtime_settings_reach_the_session(model_cache):
    from embedstream.schemas.settings import ModelSettings

    encoder = TextEncoder.from_settings(
        ModelSettings(cache_dir=model_cache, intra_op_threads=1, inter_op_threads=2, cpu_mem_arena=False)
    )
    options = encoder._session.get_session_options()  # type: ignore[attr-defined]  # beyond OrtSession
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)
    assert options.enable_cpu_mem_arena is False
    assert encoder.embed(["still encodes"]).shape == (1, 384)


@pytest.mark.integration
def test_unavailable_provider_names_the_available_ones(model_cache):
    from embedstream.onnx_models.session import ProviderUnavailableError
    from embedstream.schemas.settings import ModelSettings

    with pytest.raises(ProviderUnavailableError, match="CPUExecutionProvider"):
        TextEncoder.from_settings(ModelSettings(cache_dir=model_cache, providers=["NoSuchExecutionProvider"]))


@pytest.mark.unit
def test_a_verified_model_file_is_remembered_and_a_changed_one_is_hashed_again(tmp_path):
    import hashlib
    import json
    import os

    from embedstream.onnx_models.registry import VERIFIED_SUFFIX, matches_sha256

    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07" * 50_000)
    good = hashlib.sha256(model.read_bytes()).hexdigest()
    stamp = tmp_path / ("model.onnx" + VERIFIED_SUFFIX)

    assert not matches_sha256(model, "0" * 64) and not stamp.exists()  # a mismatch is never remembered
    assert matches_sha256(model, good)
    facts = model.stat()
    assert json.loads(stamp.read_text()) == {
        "device": facts.st_dev,
        "inode": facts.st_ino,
        "size": 100_000,
        "mtime_ns": facts.st_mtime_ns,
        "ctime_ns": facts.st_ctime_ns,
        "sha256": good,
    }
    assert matches_sha256(model, good)  # from the stamp

    model.write_bytes(b"\x08\x06" * 50_000)  # same size, other bytes, a new mtime
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000))
    assert not matches_sha256(model, good)


@pytest.mark.unit
def test_bytes_flipped_with_the_mtime_put_back_are_hashed_again(tmp_path):
    """A writer that restores the mtime after flipping 64 bytes cannot restore the ctime: the stamp no longer
    fits, the file is hashed, the mismatch found."""
    import hashlib
    import os

    from embedstream.onnx_models.registry import matches_sha256

    model = tmp_path / "model.onnx"
    model.write_bytes(bytes(range(256)) * 400)
    good = hashlib.sha256(model.read_bytes()).hexdigest()
    assert matches_sha256(model, good)
    before = model.stat()
    time.sleep(0.01)  # a ctime the clock can tell from the first
    with open(model, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xff" * 64)
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert model.stat().st_mtime_ns == before.st_mtime_ns and model.stat().st_size == before.st_size
    assert not matches_sha256(model, good)
