"""One embedded store per path per process, shared by everything in it (the API and an in-process pipeline).

qdrant-edge (and qdrant-client's local mode) let one opener hold a path. ``embedstream serve --ingest`` runs
the HTTP API and the Beam pipeline (FnApiRunner: the DoFns run in this process) side by side, so both must
use the *same* open store: after ``share_embedded_stores()``, ``open_store`` hands every caller a proxy to one
store per path, calls are serialized by a lock (the engines are not documented as thread-safe), and
``close`` on a proxy does nothing — ``close_shared_stores()`` closes them at shutdown.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from embedstream.pipelines.stores.base import Hit, SpaceSpec, StoredPoint, VectorStore, Where
from embedstream.schemas.point import PointRecord

_lock = threading.Lock()
_enabled = False
_stores: dict[str, SharedStore] = {}


class SharedStore:
    """A ``VectorStore`` whose every call holds the path's lock; ``close`` is left to the owner."""

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

    def flush(self) -> None:
        self._call(self._inner.flush)

    def search(self, space: str, vector: Sequence[float], limit: int = 10, where: Where | None = None) -> list[Hit]:
        return list(self._call(self._inner.search, space, vector, limit, where))

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        return list(self._call(self._inner.retrieve, ids, with_vectors))

    def scroll(self, with_vectors: bool = False, where: Where | None = None) -> Iterator[StoredPoint]:
        with self._lock:  # materialized under the lock: a scroll must not interleave with writes
            points = list(self._inner.scroll(with_vectors, where))
        return iter(points)

    def count(self, where: Where | None = None) -> int:
        return int(self._call(self._inner.count, where))

    def count_vectors(self, space: str) -> int:
        return int(self._call(self._inner.count_vectors, space))

    def optimize(self) -> bool:
        return bool(self._call(self._inner.optimize))

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        self._call(self._inner.set_payload, ids, payload)

    def spaces(self) -> dict[str, SpaceSpec]:
        return dict(self._call(self._inner.spaces))

    def close(self) -> None:
        """Shared: the owner closes it with ``close_shared_stores``."""

    def really_close(self) -> None:
        self._call(self._inner.close)


def share_embedded_stores() -> None:
    global _enabled
    _enabled = True


def sharing() -> bool:
    return _enabled


class StoreClosedError(RuntimeError):
    """A shared store was asked for after its owner closed it (a pipeline outliving its server)."""


_closed: set[str] = set()


def shared(key: str, opener: Callable[[], VectorStore]) -> VectorStore:
    with _lock:
        if key in _closed:
            raise StoreClosedError(f"the shared store {key} was closed by its owner; it is not opened again")
        if key not in _stores:
            _stores[key] = SharedStore(opener())
        return _stores[key]


def close_shared_stores() -> None:
    global _enabled
    with _lock:
        for key, store in _stores.items():
            store.really_close()
            _closed.add(key)
        _stores.clear()
        _enabled = False
