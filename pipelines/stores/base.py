"""The store contract both Qdrant backends satisfy.

* ``ensure_spaces`` creates the collection with one named vector per space, or checks an existing one: a
  missing space, another dimension or another model version stops the run *before any write*.
* ``upsert`` returns once the points survive a crash of this process (WAL or server ack); ``flush`` makes
  everything upserted so far durable on disk. The ingest sink calls ``flush`` before committing offsets.
* Searches and reads return plain records with string ids, whatever the backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from embedstream.schemas.errors import EmbedstreamError, NotFoundError
from embedstream.schemas.point import PointRecord, SparseVector

Where = Mapping[str, str | int | bool]


class StoreSchemaError(EmbedstreamError):
    """The existing collection does not fit the models this run uses."""


class StoreWriteError(EmbedstreamError):
    """The store took none of a batch: an outage (retry) or one poisonous point (skip it)."""


class StoreFullError(StoreWriteError):
    """The disk holding an embedded store is (nearly) full: writing now could kill the process (the engine
    memory-maps its files, and a write into a full disk is a SIGBUS), so the write is refused first."""


class StoreLockedError(EmbedstreamError):
    """Another process holds the embedded store's path."""


class NoCollectionError(NotFoundError):
    """The store has no collection yet (nothing was ingested into it); the message says where it looked."""


@dataclass(frozen=True)
class SpaceSpec:
    """A named vector: its dimension and the model (name@version) whose vectors it holds. ``sparse``: a sparse
    vector (``bm25``; no dimension), weighted by the store's IDF modifier."""

    name: str
    dim: int
    model: str
    sparse: bool = False


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchRequest:
    """One search: by a dense vector in ``space``, or (``vector`` None) by the sparse one in ``sparse_space``.
    Hybrid search asks for both in one batch and fuses them (``workers.fusion``). ``diversity`` (0..1): maximal
    marginal relevance — each next hit chosen for being near the query and unlike the hits before it, towards
    1 more for the latter (near-duplicates stop filling the first page)."""

    space: str
    vector: Sequence[float] | None
    limit: int = 10
    where: Where | None = None
    sparse: SparseVector | None = None
    sparse_space: str = "bm25"
    diversity: float = 0.0  # dense only: MMR (Qdrant's) over ``mmr_candidates``; 0 = by relevance alone

    @property
    def mmr_candidates(self) -> int:
        """The nearest points MMR re-ranks: enough that there is something unlike the top to choose."""
        return min(max(self.limit * 5, 50), 1000)


@dataclass(frozen=True)
class StoredPoint:
    id: str
    payload: dict[str, Any]
    vectors: dict[str, list[float]] = field(default_factory=dict)


class VectorStore(Protocol):
    def ensure_spaces(self, spaces: Sequence[SpaceSpec]) -> None: ...

    def upsert(self, points: Sequence[PointRecord]) -> None: ...

    def delete(self, ids: Sequence[str], where: Where | None = None) -> None:
        """Remove the points with these ids, and (``where``) every point whose payload matches; missing ones are
        no error. Durable like ``upsert``."""
        ...

    def flush(self) -> None: ...

    def search(self, space: str, vector: Sequence[float], limit: int = 10, where: Where | None = None) -> list[Hit]: ...

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        """Several searches in one call to the engine; the hits of each, in order."""
        ...

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]: ...

    def scroll(self, with_vectors: bool = False, where: Where | None = None) -> Iterator[StoredPoint]: ...

    def count(self, where: Where | None = None) -> int: ...

    def count_vectors(self, space: str) -> int:
        """How many points carry a vector in ``space``."""
        ...

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Set these payload keys on these points (other keys stay as they are)."""
        ...

    def optimize(self) -> bool:
        """Build indexes (HNSW) now if the engine leaves that to the caller; True when something was done."""
        ...

    def spaces(self) -> dict[str, SpaceSpec]: ...

    def close(self) -> None: ...


class KnowsSparseSpaces:
    """What both backends share: which of the collection's named vectors are sparse, read once (an upsert
    converts those to the engine's sparse type). ``_forget_sparse`` after the schema changed."""

    _sparse: frozenset[str] | None = None

    def spaces(self) -> dict[str, SpaceSpec]:
        raise NotImplementedError

    def _sparse_spaces(self) -> frozenset[str]:
        if self._sparse is None:
            self._sparse = frozenset(name for name, spec in self.spaces().items() if spec.sparse)
        return self._sparse

    def _forget_sparse(self) -> None:
        self._sparse = None


def missing_sparse(existing: Mapping[str, SpaceSpec], wanted: Sequence[SpaceSpec]) -> list[SpaceSpec]:
    return [s for s in wanted if s.sparse and s.name not in existing]


def check_spaces(existing: Mapping[str, SpaceSpec], wanted: Sequence[SpaceSpec], collection: str) -> None:
    """Raise ``StoreSchemaError`` naming the first dense space that does not fit, and what to do about it (a
    missing sparse space is the store's to add, or to do without: ``missing_sparse``)."""
    for space in wanted:
        if space.sparse:
            have = existing.get(space.name)
            if have is not None and have.model and have.model != space.model:
                raise StoreSchemaError(
                    f"collection {collection!r}: sparse vector {space.name!r} holds {have.model}, this run makes "
                    f"{space.model}; use a new collection"
                )
            continue
        have = existing.get(space.name)
        if have is None:
            raise StoreSchemaError(
                f"collection {collection!r} has no named vector {space.name!r} (it has {sorted(existing)}); "
                "write to a new collection (EMBEDSTREAM_QDRANT__COLLECTION) or migrate this one"
            )
        if have.dim != space.dim:
            raise StoreSchemaError(
                f"collection {collection!r}: named vector {space.name!r} has dimension {have.dim} but model "
                f"{space.model} produces {space.dim}; use a new collection (EMBEDSTREAM_QDRANT__COLLECTION)"
            )
        if have.model and have.model != space.model:
            raise StoreSchemaError(
                f"collection {collection!r}: named vector {space.name!r} holds vectors of {have.model}, this "
                f"run uses {space.model}; mixing versions corrupts search: use a new collection or migrate"
            )
