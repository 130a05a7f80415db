"""The one encoder contract: ``prepare`` → ``cost`` → ``run`` → ``finish``, over a typed ONNX Runtime session.

Every modality's encoder splits the same way, so the pipeline, search and export drive them all with one loop:

- ``prepare(inputs)``: model inputs from user inputs (texts → token ids, pictures → pixel arrays, waveforms →
  mel partials or standardized samples). CPU work outside ONNX Runtime that a pipeline may run elsewhere (the
  ingest decodes and prepares media in a thread pool beside the encoder).
- ``cost(item)``: what one prepared item costs the encoder (tokens, partials, 1 for a fixed-size picture), so
  batches are planned by compute and not by count (``batching.plan_batches``).
- ``run(batch)``: one ONNX Runtime run (padded to the batch's widest item where the graph needs it), pooled,
  not yet normalized. A model's ``head`` graph reads this raw output.
- ``finish(raw)``: the vectors as the manifest promises them (L2-normalized when it says so).

``OnnxEncoder`` holds what the three share: the manifest, the session, ``finish`` and ``embed`` (all four steps,
input order kept). Loading is separate from encoding (Beam's ``ModelHandler`` shape): ``load`` /
``from_folder`` build an encoder, nothing downloads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np

from embedstream.onnx_models.batching import run_batches
from embedstream.onnx_models.manifest import ManifestBase
from embedstream.onnx_models.session import OrtSession
from embedstream.onnx_models.vectors import l2_normalize
from embedstream.schemas.defaults import MAX_BATCH_SIZE, MAX_BATCH_TOKENS

In = TypeVar("In", contravariant=True)
Item = TypeVar("Item")
RawIn = TypeVar("RawIn")


class Encoder(Protocol[In, Item]):
    """What every encoder offers; see the module docstring for the contract of each step."""

    @property
    def manifest(self) -> ManifestBase: ...

    @property
    def dim(self) -> int: ...

    @property
    def space(self) -> str: ...

    def prepare(self, inputs: Sequence[In]) -> list[Item]: ...

    def cost(self, item: Item) -> int: ...

    def run(self, batch: Sequence[Item]) -> np.ndarray: ...

    def finish(self, raw: np.ndarray) -> np.ndarray: ...

    def embed_batch(self, batch: Sequence[Item]) -> np.ndarray: ...

    def embed(self, inputs: Sequence[In]) -> np.ndarray: ...


class OnnxEncoder(ABC, Generic[RawIn, Item]):
    """The shared half of every encoder: manifest, session, normalization, and ``embed`` = all four steps.

    ``batch_cost`` and ``batch_size`` are what ``embed`` plans with when the caller does not say (the pipeline
    passes its settings instead)."""

    batch_cost: int = MAX_BATCH_TOKENS
    batch_size: int = MAX_BATCH_SIZE

    def __init__(self, manifest: ManifestBase, session: OrtSession) -> None:
        self._manifest = manifest
        self._session = session
        self._input_names = [node.name for node in session.get_inputs()]

    @property
    def manifest(self) -> ManifestBase:
        return self._manifest

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def space(self) -> str:
        return self._manifest.space

    @abstractmethod
    def prepare(self, inputs: Sequence[RawIn]) -> list[Item]: ...

    @abstractmethod
    def cost(self, item: Item) -> int: ...

    @abstractmethod
    def run(self, batch: Sequence[Item]) -> np.ndarray: ...

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """float32 rows, L2-normalized when the manifest promises it and the graph did not already."""
        rows = raw.astype(np.float32, copy=False)
        if self._manifest.normalize and not self._manifest.normalized_in_graph:
            return l2_normalize(rows)
        return rows

    def embed_batch(self, batch: Sequence[Item]) -> np.ndarray:
        """``run`` then ``finish`` on items already prepared: one batch's finished vectors."""
        return self.finish(self.run(batch))

    def embed(
        self, inputs: Sequence[RawIn], max_batch_cost: int | None = None, max_batch_size: int | None = None
    ) -> np.ndarray:
        """``[len(inputs), dim]`` float32 in input order: prepared, batched by cost, run and finished."""
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        items = self.prepare(inputs)
        return run_batches(
            items,
            [self.cost(item) for item in items],
            self.embed_batch,
            max_batch_cost or self.batch_cost,
            max_batch_size or self.batch_size,
        )

    def _run_graph(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The manifest's output for the graph inputs it declares (extra feeds are dropped)."""
        outputs = self._session.run([self._manifest.output], {name: feeds[name] for name in self._input_names})
        return np.asarray(outputs[0])
