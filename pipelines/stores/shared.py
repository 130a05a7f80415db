"""A store shared by everything in one process that holds it: ``serve --ingest``'s API and pipeline.

qdrant-edge (and qdrant-client's local mode) let one opener hold a path. ``embedstream serve --ingest`` runs
the HTTP API and the Beam pipeline (in-process runner: the DoFns run in this process) side by side, so both
must use the *same* open store. The owner (``serve``) wraps the store it opened in a ``SharedStore``, hands
it to the API directly and to the pipeline as a ``Handle`` (``pipelines.handles``; ``run_ingest(store=…)``).
Calls are serialized by a lock (the engines are not documented as thread-safe); ``close`` on the shared
store does nothing, because the owner closes it (``close_owned``) once both users are done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from embedstream.pipelines.stores.base import (
    Hit,
    Layout,
    SearchRequest,
    SpaceSpec,
    StoredPoint,
    VectorStore,
    VectorUpdates,
    Where,
)
from embedstream.schemas.point import PointRecord
from embedstream.schemas.version import Version


class SharedStore:
    """A ``VectorStore`` whose every call holds one lock; ``close`` is left to the owner (``close_owned``)."""

    def __init__(self, inner: VectorStore) -> None:
        self._inner = inner
        self._lock = threading.RLock()

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return method(*args)

    def ensure_spaces(self, spaces: Sequence[SpaceSpec]) -> None:
        self._call(self._inner.ensure_spaces, spaces)

    def upsert(self, points: Sequence[PointRecord]) -> None:
        self._call(self._inner.upsert, points)

    def upsert_newer(self, points: Sequence[PointRecord]) -> None:
        self._call(self._inner.upsert_newer, points)

    def delete(self, ids: Sequence[str], where: Where | None = None) -> None:
        self._call(self._inner.delete, ids, where)

    def delete_older(self, where: Where, version: Version) -> None:
        self._call(self._inner.delete_older, where, version)

    def compact_tombstones(self, before_ms: int) -> None:
        self._call(self._inner.compact_tombstones, before_ms)

    def flush(self) -> None:
        self._call(self._inner.flush)

    def search(self, space: str, vector: Sequence[float], limit: int = 10, where: Where | None = None) -> list[Hit]:
        return list(self._call(self._inner.search, space, vector, limit, where))

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        return list(self._call(self._inner.search_batch, requests))

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False, tombstones: bool = False) -> list[StoredPoint]:
        return list(self._call(self._inner.retrieve, ids, with_vectors, tombstones))

    def scroll(
        self,
        with_vectors: bool = False,
        where: Where | None = None,
        having: str | None = None,
        lacking: str | None = None,
        limit: int | None = None,
    ) -> Iterator[StoredPoint]:
        with self._lock:  # materialized under the lock: a scroll must not interleave with writes
            points = list(self._inner.scroll(with_vectors, where, having, lacking, limit))
        return iter(points)

    def count(self, where: Where | None = None, having: str | None = None, lacking: str | None = None) -> int:
        return int(self._call(self._inner.count, where, having, lacking))

    def count_vectors(self, space: str) -> int:
        return int(self._call(self._inner.count_vectors, space))

    def optimize(self) -> bool:
        return bool(self._call(self._inner.optimize))

    def awaiting_index(self) -> int:
        return int(self._call(self._inner.awaiting_index))

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        self._call(self._inner.set_payload, ids, payload)

    def spaces(self) -> dict[str, SpaceSpec]:
        return dict(self._call(self._inner.spaces))

    def layout(self) -> Layout:
        return self._inner.layout()  # a cached read of the record: no engine call to serialize

    def files(self) -> Path:
        return Path(self._call(self._inner.files))

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Nothing else uses the store until the block ends (a snapshot: flush, count, copy)."""
        with self._lock:
            yield

    def add_vector(self, name: str, dim: int) -> None:
        self._call(self._inner.add_vector, name, dim)

    def drop_vector(self, name: str) -> None:
        self._call(self._inner.drop_vector, name)

    def record_spaces(self, spaces: Sequence[SpaceSpec]) -> None:
        self._call(self._inner.record_spaces, spaces)

    def update_vectors(self, vectors: VectorUpdates, lacking: str) -> None:
        self._call(self._inner.update_vectors, vectors, lacking)

    def close(self) -> None:
        """Shared: its owner closes it with ``close_owned``."""

    def close_owned(self) -> None:
        self._call(self._inner.close)
