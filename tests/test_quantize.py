"""The int8 variant: built from the real minilm, measured against it, loaded by name@version, fenced."""

from __future__ import annotations

import numpy as np
import pytest

from embedstream.onnx_models.corpus import corpus_texts
from embedstream.onnx_models.export.quantize import cpu_isa, recall_at_k
from embedstream.onnx_models.registry import load_manifest
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.pipelines.stores import StoreSchemaError
from tests.helpers import send_raw, text_event


@pytest.mark.integration
def test_variant_manifest_records_cost_and_quality(int8_cache):
    variant, _ = load_manifest(int8_cache, "minilm@1-int8")
    assert variant.version == "1-int8" and variant.variant_of == "minilm@1" and variant.space == "minilm"
    assert variant.quantization is not None and variant.quantization.isa == cpu_isa()
    assert variant.quantization.per_channel
    quality = variant.quality
    assert quality is not None and quality.texts == 260
    assert quality.mean_cosine > 0.98 and quality.min_cosine > 0.95 and quality.recall_at_10 > 0.7
    assert quality.speedup > 1.0  # measured ~2x with VNNI; anything under 1 would make the option pointless


@pytest.mark.integration
def test_plain_name_keeps_the_base_version(int8_cache):
    base, _ = load_manifest(int8_cache, "minilm")  # the variant is newer on disk, but not chosen silently
    assert base.ref == "minilm@1" and base.quantization is None
    fp32 = TextEncoder.load(int8_cache, "minilm").embed(["a quick check"])
    int8 = TextEncoder.load(int8_cache, "minilm@1-int8").embed(["a quick check"])
    assert float((fp32 * int8).sum()) > 0.95 and not np.allclose(fp32, int8, atol=1e-6)


@pytest.mark.integration
def test_switching_a_collection_to_the_variant_is_refused(make_settings, int8_cache):
    settings = make_settings(model={"cache_dir": str(int8_cache)})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"q1", text_event("q1", "quantized or not"), [])])
    run_ingest(settings)

    variant = settings.model_copy(update={"model": settings.model.model_copy(update={"text_model": "minilm@1-int8"})})
    with pytest.raises(StoreSchemaError, match=r"minilm@1.*minilm@1-int8"):
        run_ingest(variant)


@pytest.mark.unit
def test_recall_at_k():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8))
    assert recall_at_k(vectors, vectors, 10) == 1.0
    assert recall_at_k(vectors, rng.normal(size=(50, 8)), 10) < 0.5


@pytest.mark.integration
def test_an_int8_vector_does_not_depend_on_its_batch_mates(int8_cache):
    """ORT's dynamic quantization scales activations by the whole input: a text's vector moved up to 0.03 with
    its batch mates. Per-token scales make it a function of the text, so a replay or a migration's backfill
    reproduces what the ingest wrote (to float rounding, as fp32 does)."""
    variant, _ = load_manifest(int8_cache, "minilm@1-int8")
    assert variant.quantization is not None and variant.quantization.activations == "per_token"
    encoder = TextEncoder.load(int8_cache, "minilm@1-int8")
    texts = corpus_texts()[:48]
    together = encoder.embed(texts)
    alone = np.stack([encoder.embed([text])[0] for text in texts])
    shuffled = encoder.embed(texts[::-1])[::-1]
    assert np.abs(together - alone).max() < 1e-6 and np.abs(together - shuffled).max() < 1e-6
