"""Export a sentence-transformers model shipped by a pip package with optimum, then check parity.

The exported graph's ``sentence_embedding`` output already holds the model's pooling and normalization, so
the runtime needs no torch. Parity is measured against sentence-transformers itself on a fixed sentence set
(including one text long enough to be truncated) and recorded in the manifest.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import numpy as np

from embedstream.onnx_models.catalog.entry import CatalogEntry
from embedstream.onnx_models.export.drafts import catalog_draft, versions
from embedstream.onnx_models.export.graphs import optimum_export, staging_dir
from embedstream.onnx_models.export.parity import compare, install
from embedstream.onnx_models.manifest import ModelManifest, ParityReport, TextManifest, TokenizerSpec, as_kind
from embedstream.onnx_models.text_encoder import TextEncoder

PARITY_SENTENCES = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Kafka topics carry raw events into the pipeline.",
    "Qdrant stores vectors with payloads for filtering.",
    "Photosynthesis converts light energy into chemical energy.",
    "The central bank raised interest rates by a quarter point.",
    "Ünïcödé, emoji 🚀 and CJK 漢字 survive tokenization.",
    "ok",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    " ".join(["This sentence repeats to exceed the two hundred fifty six token limit."] * 30),
)


def package_model_path(package: str) -> Path:
    module = importlib.import_module(package)
    return Path(module.get_model_path())


def build_sentence_transformer(entry: CatalogEntry, cache_dir: Path) -> ModelManifest:
    source = package_model_path(entry.weights_package)
    with staging_dir(entry.name) as staging:
        inputs = optimum_export(str(source), staging, keep=["tokenizer.json"], library="sentence_transformers")
        draft = catalog_draft(
            entry,
            staging,
            inputs=inputs,
            output="sentence_embedding",
            pooled_in_graph=True,
            normalized_in_graph=True,
            tokenizer=TokenizerSpec(max_length=entry.max_length or 256, pad_id=0),
            built_with=versions("optimum", "onnxruntime", "torch", "transformers", "sentence-transformers"),
        )
        return install(draft, staging, cache_dir, sentence_transformer_parity)


def sentence_transformer_parity(manifest: ModelManifest, folder: Path) -> ParityReport:
    """Cosine between the ONNX encoder and sentence-transformers on ``PARITY_SENTENCES``."""
    from sentence_transformers import SentenceTransformer

    from embedstream.onnx_models.catalog import CATALOG

    source = package_model_path(CATALOG[manifest.name].weights_package)
    reference = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    expected = np.asarray(reference.encode(list(PARITY_SENTENCES), batch_size=8), dtype=np.float64)
    encoder = TextEncoder.from_folder(as_kind(manifest, TextManifest), folder)
    actual = encoder.embed(list(PARITY_SENTENCES)).astype(np.float64)
    return compare(actual, expected, f"sentence-transformers {reference_version()}")


def reference_version() -> str:
    return importlib.metadata.version("sentence-transformers")
