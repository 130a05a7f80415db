"""While a space migrates, every point written gets both models' vectors; after, the model the space holds.

The ingest embeds with the model its settings name. A space may hold another layout: a migration in progress
keeps the old model's vectors and the new one's (``SpaceSpec.shadow``), and after ``drop-old`` the space holds
only the new model's, in another named vector. ``MigrationWrites.prepare`` turns the points the ingest made into
the points the store must get: each named vector the space keeps (``SpaceSpec.written``) receives the point's
own vector when the run's model for that space is the one it holds, or one made again from what the point
keeps (``reembed``: its text; a picture's or sound's bytes from its ``uri``, or its event read again from the
topic it was just read from). The run's model for a space is what its plan fences the space to (``made_by``:
a ConSE picture in the text space counts as the text model's), else what the point's payload says made it. So a
migration started, switched or finished while an ingest runs needs no restart of it, and nothing it writes misses
a vector.

The layout is read before every batch (the store's record: a file for the embedded store, the collection's
metadata on a server) and again after it: if a migration changed it meanwhile, the batch is written again
with the new one (``stale``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from embedstream.pipelines.spaces.reembed import Reembedder, RemakeFrom, reembedder
from embedstream.pipelines.stores import SpaceSpec, VectorStore
from embedstream.schemas.point import PointRecord

log = logging.getLogger(__name__)


def moving(spaces: dict[str, SpaceSpec]) -> dict[str, SpaceSpec]:
    """The dense spaces whose vectors are not simply the space's own named vector of the recorded model."""
    return {n: s for n, s in spaces.items() if not s.sparse and (s.shadow is not None or s.vector)}


class MigrationWrites:
    """Lays points out for the store's current spaces (module docstring). ``remake``: where the other models
    load from (each on first need) and where media bytes come back from."""

    def __init__(self, store: VectorStore, remake: RemakeFrom | None, made_by: Mapping[str, str] | None = None) -> None:
        self._store = store
        self._remake_from = remake
        self._made_by = dict(made_by or {})
        self._reembedders: dict[str, Reembedder] = {}
        self._layout: dict[str, SpaceSpec] = {}

    def prepare(self, points: Sequence[PointRecord]) -> list[PointRecord]:
        self._layout = self._store.spaces()
        spaces = moving(self._layout)
        if not spaces or not points:
            return list(points)
        wanted: dict[str, list[int]] = {}  # model → the points needing a vector of it
        for i, point in enumerate(points):
            made = self._made(point)
            for name in spaces.keys() & point.vectors.keys():
                for model in spaces[name].written().values():
                    if model != made.get(name):
                        wanted.setdefault(model, []).append(i)
        remade = {model: self._remake(model, points, sorted(set(at))) for model, at in wanted.items()}
        out: list[PointRecord] = []
        for i, point in enumerate(points):
            vectors = {k: v for k, v in point.vectors.items() if k not in spaces}
            made = self._made(point)
            for name in spaces.keys() & point.vectors.keys():
                for engine, model in spaces[name].written().items():
                    vector = point.vectors[name] if model == made.get(name) else remade[model][i]
                    if vector is None:
                        log.warning("point %s: no %s vector can be made from its payload", point.id, model)
                        continue
                    vectors[engine] = vector if isinstance(vector, list) else vector.tolist()
            out.append(point.model_copy(update={"vectors": vectors}))
        return out

    def _made(self, point: PointRecord) -> dict[str, str]:
        """Space → the model (as the fence names it) whose vector the point carries."""
        return {**(point.payload.get("models") or {}), **self._made_by}

    def stale(self) -> bool:
        """Did the layout change since ``prepare`` read it (then the batch must be written again)?"""
        return moving(self._store.spaces()) != moving(self._layout)

    def _remake(self, model: str, points: Sequence[PointRecord], at: list[int]) -> dict[int, np.ndarray | None]:
        """Vectors of ``model`` for the points at these positions, made from their payloads."""
        return dict(zip(at, self._reembedder(model).vectors([points[i].payload for i in at]), strict=True))

    def close(self) -> None:
        """Release the re-embedders' open readers (the writer's owner calls this at teardown)."""
        for remaker in self._reembedders.values():
            remaker.close()
        self._reembedders.clear()

    def _reembedder(self, ref: str) -> Reembedder:
        if ref not in self._reembedders:
            if self._remake_from is None:
                raise RuntimeError(f"a migration needs model {ref}, and this writer was given no model settings")
            self._reembedders[ref] = reembedder(self._remake_from, ref)
        return self._reembedders[ref]
