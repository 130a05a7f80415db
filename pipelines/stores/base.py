"""The store contract both Qdrant backends satisfy.

* ``ensure_spaces`` creates the collection with one named vector per space, or checks an existing one: a
  missing space, another dimension or another model version stops the run *before any write*.
* ``upsert`` returns once the points survive a crash of this process (WAL or server ack); ``flush`` makes
  everything upserted so far durable on disk. The ingest sink calls ``flush`` before committing offsets.
* Searches and reads return plain records with string ids, whatever the backend.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from embedstream.schemas.errors import EmbedstreamError, NotFoundError
from embedstream.schemas.point import PointRecord, SparseVector
from embedstream.schemas.version import Version

Where = Mapping[str, str | int | bool]
SCROLL_PAGE = 512


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
class Shadow:
    """A space's next vectors while it migrates to another model (``pipelines.spaces``): the engine's named
    vector holding them, their model and dimension, and whether searches use them yet (``spaces switch``)."""

    vector: str
    model: str
    dim: int
    searched: bool = False


@dataclass(frozen=True)
class SpaceSpec:
    """A space: its dimension and the model (name@version) whose vectors it holds. ``sparse``: a sparse vector
    (``bm25``; no dimension), weighted by the store's IDF modifier.

    ``vector``: the engine's named vector holding it ("" = the space's own name; another one once a migration
    has dropped the old vectors). ``shadow``: the vectors of the model it is migrating to, written beside."""

    name: str
    dim: int
    model: str
    sparse: bool = False
    vector: str = ""
    shadow: Shadow | None = None

    @property
    def engine_name(self) -> str:
        """The named vector this space's own (primary) vectors live in."""
        return self.vector or self.name

    @property
    def searched(self) -> tuple[str, str, int]:
        """(named vector, model, dimension) that searches of this space use."""
        if self.shadow is not None and self.shadow.searched:
            return self.shadow.vector, self.shadow.model, self.shadow.dim
        return self.engine_name, self.model, self.dim

    def written(self) -> dict[str, str]:
        """Named vector → the model whose vectors it must get: the primary, and the shadow while migrating."""
        out = {self.engine_name: self.model}
        if self.shadow is not None:
            out[self.shadow.vector] = self.shadow.model
        return out


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
    # The engine's named vector to search, as the caller resolved it with the model that embedded the query
    # (``SpaceSpec.searched``); None: the store resolves ``space`` itself.
    vector_name: str | None = None
    # The results MMR's candidate pool is sized for, when more are asked for than will be shown (a plain search
    # ranks deeper to collapse nested passages): the same pool, so the same picks, as a search of that many.
    mmr_for: int | None = None

    @property
    def mmr_candidates(self) -> int:
        """The nearest points MMR re-ranks: enough that there is something unlike the top to choose."""
        return min(max((self.mmr_for or self.limit) * 5, 50), 1000)


@dataclass(frozen=True)
class StoredPoint:
    id: str
    payload: dict[str, Any]
    vectors: dict[str, list[float]] = field(default_factory=dict)


class VectorStore(Protocol):
    def ensure_spaces(self, spaces: Sequence[SpaceSpec]) -> None: ...

    def upsert(self, points: Sequence[PointRecord]) -> None: ...

    def upsert_newer(self, points: Sequence[PointRecord]) -> None:
        """Upsert each point unless the store holds a newer version of its id (``schemas.version``: the payload's
        ``ver``, ``ver_tie``), decided by the engine itself per point in one conditional write, so two writers
        cannot interleave a check and a write. An equal version is written again; a point without a version (a
        video's view) is written as by ``upsert``."""
        ...

    def delete(self, ids: Sequence[str], where: Where | None = None) -> None:
        """Remove the points with these ids, and (``where``) every point whose payload matches; missing ones are
        no error. Durable like ``upsert``."""
        ...

    def delete_older(self, where: Where, version: Version) -> None:
        """Remove every point matching ``where`` whose version is older than ``version`` (or that has none)."""
        ...

    def compact_tombstones(self, before_ms: int) -> None:
        """Remove the tombstones written before ``before_ms`` (unix ms): after that, a replay older than the
        delete it marks could re-create what the delete removed (``pipeline.tombstone_retention_s``)."""
        ...

    def flush(self) -> None: ...

    def search(self, space: str, vector: Sequence[float], limit: int = 10, where: Where | None = None) -> list[Hit]: ...

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        """Several searches in one call to the engine; the hits of each, in order."""
        ...

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False, tombstones: bool = False) -> list[StoredPoint]:
        """These points (missing ones left out); with vectors, each space's searched vector under the space's
        name (a migrating space's other one left out). A deleted id's tombstone is left out too, unless
        ``tombstones`` (the writer compares versions with it); ``scroll``, ``count`` and searches never see one."""
        ...

    def scroll(
        self,
        with_vectors: bool = False,
        where: Where | None = None,
        having: str | None = None,
        lacking: str | None = None,
        limit: int | None = None,
    ) -> Iterator[StoredPoint]:
        """Every point (matching ``where``; with the named vector ``having``, without ``lacking``), or the first
        ``limit`` of them."""
        ...

    def count(self, where: Where | None = None, having: str | None = None, lacking: str | None = None) -> int:
        """How many points match ``where`` (and hold the named vector ``having``, lack ``lacking``)."""
        ...

    def count_vectors(self, space: str) -> int:
        """How many points carry a vector in ``space``."""
        ...

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Set these payload keys on these points (other keys stay as they are)."""
        ...

    def optimize(self) -> bool:
        """Build indexes (HNSW) now if the engine leaves that to the caller; True when something was done."""
        ...

    def awaiting_index(self) -> int:
        """Vectors searched by brute force until ``optimize`` runs (0 where the engine indexes by itself)."""
        ...

    def spaces(self) -> dict[str, SpaceSpec]:
        """The collection's spaces as recorded now (read afresh: a migration may have changed them)."""
        ...

    def add_vector(self, name: str, dim: int) -> None:
        """A new dense named vector (cosine) in the existing collection; its points get it by ``update_vectors``."""
        ...

    def drop_vector(self, name: str) -> None:
        """Remove a dense named vector and every point's vector in it."""
        ...

    def record_spaces(self, spaces: Sequence[SpaceSpec]) -> None:
        """Record the spaces (models, named vectors, migrations) the collection holds: the fence every run reads."""
        ...

    def layout(self) -> Layout:
        """The recorded spaces at most a second old (at once after this process changed them): what searches and
        reads resolve names with. ``spaces()`` reads afresh."""
        ...

    def holding(self) -> contextlib.AbstractContextManager[None]:
        """Keep the store to the caller for a block (a snapshot): other users of a shared store wait."""
        ...

    def files(self) -> Path:
        """The folder holding the store's files (for a snapshot, after ``flush``); ``UsageError`` where the store
        keeps none here (a server: it snapshots itself; ``:memory:``)."""
        ...

    def update_vectors(self, vectors: VectorUpdates, lacking: str) -> None:
        """Set these named vectors on these points (point id → name → vector), leaving their other vectors and
        payload alone, on the points that still exist and still lack the named vector ``lacking``: a point
        written meanwhile (which carries it) is not overwritten with vectors of its older text."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Layout:
    """The recorded spaces and what the stores derive from them, once per read: where a space's points are
    written (``writes``: space → its primary named vector), what a stored named vector is read back as
    (``reads``: the searched one → its space, a migrating space's other one → None: left out), the sparse ones."""

    spaces: dict[str, SpaceSpec]
    writes: dict[str, str]
    reads: dict[str, str | None]
    sparse: frozenset[str]

    @classmethod
    def of(cls, spaces: dict[str, SpaceSpec]) -> Layout:
        reads: dict[str, str | None] = {}
        for name, spec in spaces.items():
            reads.update(dict.fromkeys(spec.written(), None))
            reads[spec.searched[0]] = name
        writes = {name: spec.engine_name for name, spec in spaces.items()}
        return cls(spaces, writes, reads, frozenset(n for n, spec in spaces.items() if spec.sparse))


class KnowsLayout:
    """What both backends share: the recorded spaces (``layout``), read at most once a second and again at once
    after this process changed them (``_forget_layout``): a point's vectors and a search name spaces, and after
    a migration a space's vectors live in another named vector (``SpaceSpec.engine_name``)."""

    LAYOUT_TTL_S = 1.0
    _layout_read: tuple[float, Layout] | None = None

    def spaces(self) -> dict[str, SpaceSpec]:
        raise NotImplementedError

    def layout(self) -> Layout:
        now = time.monotonic()
        if self._layout_read is None or now - self._layout_read[0] > self.LAYOUT_TTL_S:
            self._layout_read = (now, Layout.of(self.spaces()))
        return self._layout_read[1]

    def _forget_layout(self) -> None:
        self._layout_read = None

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Nothing else uses the store until the block ends: one opener here (``SharedStore`` locks)."""
        yield

    def _searched_name(self, request: SearchRequest) -> str:
        return request.vector_name or self._searched_vector(request.space)

    def _searched_vector(self, space: str) -> str:
        """The named vector searches of ``space`` read now (its own name for a space not recorded)."""
        spec = self.layout().spaces.get(space)
        return spec.searched[0] if spec is not None else space

    def _writer(self, make_sparse: Callable[[SparseVector], Any]) -> Callable[[PointRecord], dict[str, Any]]:
        """A point's vectors as the engine takes them — each under the named vector its space is written to, sparse
        ones (those the collection has) as ``make_sparse`` builds them — with the layout read once for a batch."""
        layout = self.layout()

        def vectors(point: PointRecord) -> dict[str, Any]:
            out: dict[str, Any] = {layout.writes.get(k, k): v for k, v in point.vectors.items()}
            for name, sparse in point.sparse.items():
                if name in layout.sparse:
                    out[layout.writes.get(name, name)] = make_sparse(sparse)
            return out

        return vectors

    def _reader(self) -> Callable[[Any, Mapping[str, Any] | None, Any], StoredPoint]:
        """Records as callers see them — string id, dense vectors keyed by space (sparse ones stay stored) —
        with the layout read once for all of them."""
        reads = self.layout().reads

        def stored(point_id: Any, payload: Mapping[str, Any] | None, vectors: Any) -> StoredPoint:
            named = vectors if isinstance(vectors, Mapping) else {}
            dense: dict[str, list[float]] = {}
            for key, vector in named.items():
                space = reads.get(key, key)
                if space is not None and not hasattr(vector, "indices"):
                    dense[space] = list(vector)
            return StoredPoint(str(point_id), dict(payload or {}), dense)

        return stored


VectorUpdates = Mapping[str, Mapping[str, Sequence[float]]]


def paged(fetch: Callable[[Any, int], tuple[Sequence[Any], Any]], limit: int | None) -> Iterator[Any]:
    """Records page by page — ``fetch(offset, n)`` gives a page and the next offset (None: the end) — up to
    ``limit`` of them (None: all): both engines' scroll."""
    offset, left = None, limit
    while left is None or left > 0:
        records, offset = fetch(offset, SCROLL_PAGE if left is None else min(SCROLL_PAGE, left))
        yield from records
        left = None if left is None else left - len(records)
        if offset is None:
            return


def split_versioned(points: Sequence[PointRecord]) -> tuple[list[tuple[PointRecord, Version]], list[PointRecord]]:
    """The points that carry a version (with it), and those that do not (written unconditionally)."""
    versioned, plain = [], []
    for point in points:
        version = Version.stored(point.payload)
        if version is None:
            plain.append(point)
        else:
            versioned.append((point, version))
    return versioned, plain


def update_existing(
    update: Callable[[VectorUpdates], None], held: Callable[[list[str]], set[str]], vectors: VectorUpdates
) -> None:
    """``update(vectors)``; if the engine refused the batch because some point is gone (deleted since it was
    read: both engines refuse the whole batch then), again with the points that are still there."""
    try:
        update(vectors)
    except Exception:
        remaining = {pid: named for pid, named in vectors.items() if pid in held(list(vectors))}
        if len(remaining) == len(vectors):
            raise
        if remaining:
            update(remaining)


def record_of(spaces: Sequence[SpaceSpec]) -> dict[str, Any]:
    """The spaces as the fence records them (edge sidecar, server collection metadata)."""
    record: dict[str, Any] = {}
    for s in spaces:
        entry: dict[str, Any] = {"dim": s.dim, "model": s.model}
        if s.sparse:
            entry["sparse"] = True
        if s.vector:
            entry["vector"] = s.vector
        if s.shadow is not None:
            shadow = s.shadow
            entry["shadow"] = {"vector": shadow.vector, "model": shadow.model, "dim": shadow.dim}
            entry["shadow"]["searched"] = shadow.searched
        record[s.name] = entry
    return record


def spaces_of(record: Mapping[str, Any]) -> dict[str, SpaceSpec]:
    """``record_of`` read back."""
    spaces: dict[str, SpaceSpec] = {}
    for name, v in record.items():
        shadow = v.get("shadow")
        spaces[name] = SpaceSpec(
            name,
            int(v.get("dim", 0)),
            str(v.get("model", "")),
            bool(v.get("sparse")),
            str(v.get("vector", "")),
            Shadow(str(shadow["vector"]), str(shadow["model"]), int(shadow["dim"]), bool(shadow.get("searched")))
            if shadow
            else None,
        )
    return spaces


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
        shadow = have.shadow
        if shadow is not None and shadow.model == space.model and shadow.dim == space.dim:
            continue  # migrating to this run's model: the writer fills the old vectors beside (pipelines.spaces)
        if have.dim != space.dim:
            raise StoreSchemaError(
                f"collection {collection!r}: named vector {space.name!r} has dimension {have.dim} but model "
                f"{space.model} produces {space.dim}; use a new collection (EMBEDSTREAM_QDRANT__COLLECTION)"
            )
        if have.model and have.model != space.model:
            raise StoreSchemaError(
                f"collection {collection!r}: named vector {space.name!r} holds vectors of {have.model}, this "
                f"run uses {space.model}; mixing versions corrupts search: use a new collection, or migrate it "
                f"(embedstream spaces migrate {space.name} --to {space.model})"
            )
