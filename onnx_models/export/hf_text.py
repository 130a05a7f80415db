"""Export any Hugging Face text encoder optimum supports (BERT, RoBERTa, GPT-2, …) from a local folder.

``embedstream models export NAME --source SOURCE --pooling mean|cls|last_token``: SOURCE is a model folder (or a
model id already in the local Hugging Face cache — nothing is downloaded). optimum exports the
``feature-extraction`` graph (token vectors, ``last_hidden_state``); pooling and L2 normalization run in numpy
after ONNX Runtime, as the manifest says. Parity is measured against the PyTorch model with the same pooling on
a fixed text set and recorded; a build below ``PARITY_MIN_COSINE`` is not installed.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstream.onnx_models.export.drafts import hf_config, hf_draft
from embedstream.onnx_models.export.graphs import optimum_export, staging_dir
from embedstream.onnx_models.export.parity import compare, install
from embedstream.onnx_models.manifest import ModelManifest, Origin, ParityReport, TextManifest, TokenizerSpec, as_kind
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.onnx_models.vectors import l2_normalize, pool_tokens

Pooling = Literal["mean", "cls", "last_token"]
PARITY_TEXTS = (
    "Kafka topics carry raw events into the pipeline.",
    "short",
    "A somewhat longer sentence, so that padding matters inside a batch of mixed lengths.",
    "Trains, stations and timetables.",
)


def export_text_model(
    source: str, name: str, cache_dir: Path, pooling: Pooling = "mean", normalize: bool = True, max_length: int = 512
) -> ModelManifest:
    config = hf_config(source)
    dim = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))
    positions = int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or max_length)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # their position ids start after the padding index
    limit = min(max_length, positions)
    with staging_dir(name) as staging:
        inputs = optimum_export(source, staging, keep=["tokenizer.json"])
        draft = hf_draft(
            name,
            source,
            staging,
            inputs,
            modality="text",
            dim=dim,
            pooling=pooling,
            normalize=normalize,
            tokenizer=TokenizerSpec(max_length=limit, pad_id=pad_id(source)),
            origin=Origin(recipe="hf_text", source=str(source)),
        )
        return install(draft, staging, cache_dir, torch_parity)


def pad_id(source: str) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its end-of-text token, else 0."""
    tokenizer = _tokenizer(source)
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, local_files_only=True)


def save_tokenizer(source: str, path: Path) -> None:
    """The model's fast tokenizer as one ``tokenizer.json`` (what the runtime loads with ``tokenizers``)."""
    _tokenizer(source).backend_tokenizer.save(str(path))


def torch_reference(
    source: str, tokenizer_file: Path, texts: list[str], pooling: Pooling, normalize: bool, max_length: int
) -> np.ndarray:
    """The PyTorch model on the same token ids, one text at a time (no padding: the plainest reference),
    pooled and normalized the same way."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    model = AutoModel.from_pretrained(source, local_files_only=True).eval()
    rows = []
    for text in texts:
        ids = tokenizer.encode(text).ids
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        row = pool_tokens(hidden.last_hidden_state.numpy(), np.ones((1, len(ids)), dtype=np.int64), pooling)[0]
        rows.append(l2_normalize(row) if normalize else row)
    return np.asarray(rows, dtype=np.float64)


def torch_parity(any_manifest: ModelManifest, folder: Path) -> ParityReport:
    """The ONNX encoder (batched, padded) against the PyTorch model one text at a time, pooled the same way."""
    manifest = as_kind(any_manifest, TextManifest)
    source, max_length = manifest.source_folder, manifest.tokenizer.max_length
    encoder = TextEncoder.from_folder(manifest, folder)
    actual = encoder.embed(list(PARITY_TEXTS), max_batch_cost=10_000).astype(np.float64)
    pooling: Pooling = manifest.pooling if manifest.pooling in ("cls", "last_token") else "mean"
    expected = torch_reference(
        source, folder / "tokenizer.json", list(PARITY_TEXTS), pooling, manifest.normalize, max_length
    )
    return compare(actual, expected, f"PyTorch transformers {importlib.metadata.version('transformers')}")
