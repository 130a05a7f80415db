"""The runtime text encoder: tokenizer + ONNX Runtime session + pooling, described by a ``TextManifest``.

``prepare`` tokenizes (truncated to the manifest's max length, never padded to a fixed length), ``cost`` is a
text's token count, ``run`` pads a batch to its longest member and pools with the attention mask, so a batch
planned by padded tokens costs what it computes (``onnx_models.encoder``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from embedstream.onnx_models.encoder import OnnxEncoder
from embedstream.onnx_models.manifest import TextManifest
from embedstream.onnx_models.registry import load_manifest_of
from embedstream.onnx_models.session import OrtSession, session_for
from embedstream.onnx_models.vectors import pool_tokens
from embedstream.schemas.settings import ModelSettings

TokenIds = list[int]


class TextEncoder(OnnxEncoder[str, TokenIds]):
    """Encodes texts into the manifest's space. Output rows are float32, L2-normalized when the manifest says."""

    def __init__(self, manifest: TextManifest, folder: Path, session: OrtSession, tokenizer: Tokenizer) -> None:
        super().__init__(manifest, session)
        self.text_manifest = manifest
        self.folder = folder
        self._tokenizer = tokenizer
        self._pad_id = manifest.tokenizer.pad_id

    @classmethod
    def load(cls, cache_dir: Path, name: str, runtime: ModelSettings | None = None) -> TextEncoder:
        """The verified build of ``name`` from the cache, with ``runtime``'s providers, threads, arena."""
        manifest, folder = load_manifest_of(TextManifest, cache_dir, name)
        return cls.from_folder(manifest, folder, runtime)

    @classmethod
    def from_settings(cls, model: ModelSettings) -> TextEncoder:
        """The text model the settings name, loaded the way they say."""
        return cls.load(model.cache_dir, model.text_model, model)

    @classmethod
    def from_folder(cls, manifest: TextManifest, folder: Path, runtime: ModelSettings | None = None) -> TextEncoder:
        tokenizer = Tokenizer.from_file(str(folder / manifest.tokenizer.file))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=manifest.tokenizer.max_length)
        return cls(manifest, folder, session_for(folder / manifest.onnx_file, runtime), tokenizer)

    def prepare(self, inputs: Sequence[str]) -> list[TokenIds]:
        """Token ids per text, truncated to the manifest's max length, not padded."""
        return [enc.ids for enc in self._tokenizer.encode_batch(list(inputs))]

    tokenize = prepare

    @property
    def max_tokens(self) -> int:
        """The most tokens the model reads (special tokens included); longer texts are truncated by ``prepare``."""
        return self.text_manifest.tokenizer.max_length

    @property
    def tokenizer_file(self) -> Path:
        return self.folder / self.text_manifest.tokenizer.file

    def cost(self, item: TokenIds) -> int:
        return len(item)

    def run(self, batch: Sequence[TokenIds]) -> np.ndarray:
        """One ONNX Runtime run over a batch padded to its longest member; pooled, not normalized."""
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        if "position_ids" in self._input_names:  # decoder exports (GPT-2…): right padding, positions from 0
            feeds["position_ids"] = np.broadcast_to(np.arange(width, dtype=np.int64), input_ids.shape).copy()
        output = self._run_graph(feeds)
        if self.manifest.pooled_in_graph:
            return output
        return pool_tokens(output, mask, self.text_manifest.pooling)
