"""The runtime text encoder: tokenizer + ONNX Runtime session + pooling, described by a manifest.

Loading (``TextEncoder.load``) is separate from encoding, the shape of Beam's ``ModelHandler``. Encoding is
split in two steps so a pipeline can tokenize once, batch by padded-token cost, and run:
``tokenize`` → ``embed_tokens`` (one ORT run, padded to the longest) — or ``embed`` for both at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from embedstream.onnx_models.batching import run_batches
from embedstream.onnx_models.manifest import ModelManifest
from embedstream.onnx_models.registry import load_manifest
from embedstream.onnx_models.session import session_for
from embedstream.schemas.settings import ModelSettings


class TextEncoder:
    """Encodes texts into the manifest's space. Output rows are float32, L2-normalized when the manifest says."""

    def __init__(self, manifest: ModelManifest, folder: Path, session: object, tokenizer: Tokenizer) -> None:
        if manifest.tokenizer is None:
            raise ValueError(f"model {manifest.ref} has no tokenizer spec; it is not a text model")
        self.manifest = manifest
        self.folder = folder
        self._session = session
        self._tokenizer = tokenizer
        self._pad_id = manifest.tokenizer.pad_id
        self._input_names = [i.name for i in session.get_inputs()]  # type: ignore[attr-defined]

    @classmethod
    def load(cls, cache_dir: Path, name: str, runtime: ModelSettings | None = None) -> TextEncoder:
        """The newest verified build of ``name`` from the cache, with ``runtime``'s providers, threads, arena."""
        manifest, folder = load_manifest(cache_dir, name)
        return cls.from_folder(manifest, folder, runtime)

    @classmethod
    def from_settings(cls, model: ModelSettings) -> TextEncoder:
        """The text model the settings name, loaded the way they say."""
        return cls.load(model.cache_dir, model.text_model, model)

    @classmethod
    def from_folder(cls, manifest: ModelManifest, folder: Path, runtime: ModelSettings | None = None) -> TextEncoder:
        if manifest.tokenizer is None:
            raise ValueError(f"model {manifest.ref} has no tokenizer spec; it is not a text model")
        tokenizer = Tokenizer.from_file(str(folder / manifest.tokenizer.file))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=manifest.tokenizer.max_length)
        return cls(manifest, folder, session_for(folder / manifest.onnx_file, runtime), tokenizer)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def space(self) -> str:
        return self.manifest.space

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to the manifest's max length, not padded."""
        return [enc.ids for enc in self._tokenizer.encode_batch(list(texts))]

    def embed_tokens(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """One ONNX Runtime run over a batch padded to its longest member."""
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
        outputs = self._session.run([self.manifest.output], {k: feeds[k] for k in self._input_names})  # type: ignore[attr-defined]
        return self._postprocess(np.asarray(outputs[0]), mask)

    def embed(self, texts: Sequence[str], max_batch_tokens: int = 4096, max_batch_size: int = 64) -> np.ndarray:
        """Embed texts in length-sorted batches of at most ``max_batch_tokens`` padded tokens; input order kept."""
        tokens = self.tokenize(texts)
        return run_batches(tokens, [len(t) for t in tokens], self.embed_tokens, max_batch_tokens, max_batch_size)

    def _postprocess(self, output: np.ndarray, mask: np.ndarray) -> np.ndarray:
        manifest = self.manifest
        if not manifest.pooled_in_graph:
            output = pool(output, mask, manifest.pooling)
        output = output.astype(np.float32, copy=False)
        if manifest.normalize and not manifest.normalized_in_graph:
            norms = np.linalg.norm(output, axis=1, keepdims=True)
            output = output / np.maximum(norms, 1e-12)
        return output


def pool(tokens: np.ndarray, mask: np.ndarray, kind: str) -> np.ndarray:
    """Pool token vectors ``[batch, seq, dim]`` to ``[batch, dim]`` honouring the attention mask."""
    if kind == "mean":
        weights = mask[:, :, None].astype(tokens.dtype)
        return (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if kind == "cls":
        return tokens[:, 0]
    if kind == "last_token":
        last = mask.sum(axis=1) - 1
        return tokens[np.arange(tokens.shape[0]), last]
    if kind == "none":
        return tokens
    raise ValueError(f"unknown pooling {kind!r}; expected mean, cls, last_token or none")
