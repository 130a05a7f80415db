"""Int8 dynamic quantization as a build option: a separate model version with its cost and quality measured.

The variant ``<version>-int8`` quantizes every MatMul's weights to int8 (per output channel by default) with
ONNX Runtime's dynamic quantization, for the instruction set this CPU has: with AVX-512 VNNI (or AVX-VNNI) the
full int8 range is used; without it ``reduce_range`` avoids the u8×s8 saturation of plain AVX2/AVX-512. Each
token's activations get their own scale (``export.per_token``), so a text's vector does not depend on the
texts batched with it.
Side by side in one run on the sample corpus, the manifest records the speed-up over fp32 and the agreement:
mean and minimum cosine to the fp32 vectors, and recall@10 of fp32's nearest neighbours (each text a query).
Because its vectors differ from fp32's, the variant is another version: a named vector holds one of them.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx

from embedstream.onnx_models.corpus import corpus_path, corpus_texts
from embedstream.onnx_models.export.graphs import staging_dir
from embedstream.onnx_models.export.per_token import per_token_activations
from embedstream.onnx_models.manifest import ModelManifest, Quantization, TextManifest, VariantQuality
from embedstream.onnx_models.registry import load_manifest_of, publish, sha256_of
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.onnx_models.vectors import l2_normalize

TIMING_ROUNDS = 3


def cpu_isa() -> str:
    """The best int8 instruction set this (Linux) CPU advertises."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    for isa in ("avx512_vnni", "avx_vnni", "avx512f", "avx2"):
        if isa in flags:
            return isa
    return "baseline"


def variant_version(base_version: str) -> str:
    return f"{base_version}-int8"


def build_int8(cache_dir: Path, name: str, per_channel: bool = True, texts: list[str] | None = None) -> ModelManifest:
    """Quantize the built base model ``name`` into its int8 variant and measure it against the base."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    base, base_folder = load_manifest_of(TextManifest, cache_dir, name)
    isa = cpu_isa()
    reduce_range = isa not in ("avx512_vnni", "avx_vnni")
    with staging_dir(f"{base.name}-int8") as staging:
        quantize_dynamic(
            base_folder / base.onnx_file,
            staging / "model.onnx",
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
        )
        graph = onnx.load(staging / "model.onnx")
        per_token_activations(graph)  # a text's vector must not depend on its batch mates
        onnx.save(graph, staging / "model.onnx")
        shutil.copy(base_folder / base.tokenizer.file, staging / base.tokenizer.file)
        draft = base.model_copy(
            update={
                "version": variant_version(base.version),
                "sha256": sha256_of(staging / "model.onnx"),
                "parity": None,
                "variant_of": base.ref,
                "quantization": Quantization(
                    per_channel=per_channel, reduce_range=reduce_range, isa=isa, activations="per_token"
                ),
            }
        )
        quality = compare_variant(
            TextEncoder.from_folder(base, base_folder), TextEncoder.from_folder(draft, staging), texts
        )
        manifest = draft.model_copy(update={"quality": quality})
        publish(staging, manifest, cache_dir)
    return manifest


def compare_variant(base: TextEncoder, variant: TextEncoder, texts: list[str] | None = None) -> VariantQuality:
    """Speed-up and agreement of ``variant`` with ``base`` on the same texts, timed alternately."""
    corpus = "given texts" if texts else corpus_path().name
    texts = texts or corpus_texts()
    reference, candidate = base.embed(texts), variant.embed(texts)  # also warms both sessions up
    timings: dict[str, list[float]] = {"base": [], "variant": []}
    for _ in range(TIMING_ROUNDS):
        for label, encoder in (("base", base), ("variant", variant)):
            started = time.perf_counter()
            encoder.embed(texts)
            timings[label].append(time.perf_counter() - started)
    cosine = (reference * candidate).sum(axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    )
    return VariantQuality(
        corpus=corpus,
        texts=len(texts),
        speedup=float(np.median(timings["base"]) / np.median(timings["variant"])),
        mean_cosine=float(cosine.mean()),
        min_cosine=float(cosine.min()),
        recall_at_10=recall_at_k(reference, candidate, 10),
        measured_at=datetime.now(UTC),
    )


def recall_at_k(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    """Mean overlap of each row's top-k neighbours (itself excluded) under ``reference`` and ``candidate``."""
    k = min(k, len(reference) - 1)

    def neighbours(vectors: np.ndarray) -> np.ndarray:
        unit = l2_normalize(vectors)
        scores = unit @ unit.T
        np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1)[:, :k]

    truth, found = neighbours(reference), neighbours(candidate)
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))
