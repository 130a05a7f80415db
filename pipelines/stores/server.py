"""Qdrant through qdrant-client: a server or cluster (``url`` + ``api_key``), or its local mode.

Local mode (``backend="local"``, a ``path`` or ``:memory:``) runs the same server API in pure Python; the
tests use it to prove the server code path writes what the embedded store writes. Model versions per named
vector are kept in the collection's ``metadata`` so the same fence holds on a server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models

from embedstream.pipelines.stores.base import (
    Hit,
    KnowsLayout,
    SearchRequest,
    SpaceSpec,
    StoredPoint,
    StoreLockedError,
    VectorUpdates,
    Where,
    check_spaces,
    missing_sparse,
    paged,
    record_of,
    spaces_of,
    split_versioned,
    update_existing,
)
from embedstream.schemas.errors import UsageError
from embedstream.schemas.point import PointRecord
from embedstream.schemas.settings import QdrantSettings
from embedstream.schemas.version import DELETED_KEY, MAJOR_KEY, TIE_KEY, TOMBSTONE, Version, is_tombstone

log = logging.getLogger(__name__)
METADATA_KEY = "embedstream_spaces"


def _query(request: SearchRequest, name: str, params: models.SearchParams) -> models.QueryRequest:
    """By the dense vector (with MMR when ``diversity`` asks; ``params``: HNSW ef, quantized rescoring), or
    (none given) by the sparse one."""
    where = _filter(request.where, live=False)
    if request.vector is not None or request.sparse is None:
        dense = [float(x) for x in request.vector or ()]
        query: Any = dense
        if request.diversity > 0:
            mmr = models.Mmr(diversity=request.diversity, candidates_limit=request.mmr_candidates)
            query = models.NearestQuery(nearest=dense, mmr=mmr)
        return models.QueryRequest(
            query=query, using=name, limit=request.limit, filter=where, with_payload=True, params=params
        )
    sparse = models.SparseVector(indices=request.sparse.indices, values=request.sparse.values)
    return models.QueryRequest(
        query=sparse, using=request.sparse_space, limit=request.limit, filter=where, with_payload=True
    )


def _filter(
    where: Where | None, having: str | None = None, lacking: str | None = None, live: bool = True
) -> models.Filter | None:
    """``where`` (payload key = value), ``having``/``lacking`` a named vector; ``live``: tombstones left out (a
    search needs no such clause: a tombstone has no vector)."""
    must: list[Any] = [models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in (where or {}).items()]
    must += [models.HasVectorCondition(has_vector=having)] if having else []
    must_not: list[Any] = [models.HasVectorCondition(has_vector=lacking)] if lacking else []
    if live:
        must_not.append(models.FieldCondition(key="modality", match=models.MatchValue(value=TOMBSTONE)))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


def _stored_before(version: Version, inclusive: bool) -> models.Filter:
    """A stored point whose version is older than ``version`` (``inclusive``: or equal), or that has none."""
    major, tie = version
    same_major_tie = models.Range(lte=tie) if inclusive else models.Range(lt=tie)
    return models.Filter(
        should=[
            models.FieldCondition(key=MAJOR_KEY, range=models.Range(lt=major)),
            models.Filter(
                must=[
                    models.FieldCondition(key=MAJOR_KEY, match=models.MatchValue(value=major)),
                    models.FieldCondition(key=TIE_KEY, range=same_major_tie),
                ]
            ),
            models.IsEmptyCondition(is_empty=models.PayloadField(key=MAJOR_KEY)),
        ]
    )


def _replaceable(points: Sequence[tuple[PointRecord, Version]]) -> models.Filter:
    """One ``update_filter`` for a batch: each point's own id with its own version (tested per point by the
    server; a new id is inserted). An equal version is replaced: the same event written again."""
    each: list[Any] = [
        models.Filter(must=[models.HasIdCondition(has_id=[p.id]), _stored_before(v, inclusive=True)]) for p, v in points
    ]
    return models.Filter(should=each)


class ServerStore(KnowsLayout):
    def __init__(self, settings: QdrantSettings) -> None:
        self.collection = settings.collection
        self._options = settings.collection_options
        # Dense searches: rescore int8 candidates with the originals (ignored where nothing is quantized).
        quantization = models.QuantizationSearchParams(
            rescore=True, oversampling=self._options.quantization_oversampling
        )
        self._params = models.SearchParams(hnsw_ef=settings.hnsw_ef, quantization=quantization)
        self._remote = settings.backend == "server"
        self._path = settings.path
        try:
            if settings.backend == "local":
                location = settings.path
                self._client = (
                    QdrantClient(location=":memory:") if location == ":memory:" else QdrantClient(path=location)
                )
            else:
                if not settings.url:
                    raise UsageError("qdrant backend 'server' needs a url (EMBEDSTREAM_QDRANT__URL)")
                api_key = settings.api_key.get_secret_value() if settings.api_key else None
                self._client = QdrantClient(url=settings.url, api_key=api_key, timeout=int(settings.timeout_s))
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise StoreLockedError(
                    f"store path {settings.path} is in use by another process; stop it or use another path "
                    "(EMBEDSTREAM_QDRANT__PATH)"
                ) from exc
            raise

    def spaces(self) -> dict[str, SpaceSpec]:
        if not self._client.collection_exists(self.collection):
            return {}
        info = self._client.get_collection(self.collection)
        vectors = info.config.params.vectors
        recorded = (info.config.metadata or {}).get(METADATA_KEY, {}) if info.config.metadata else {}
        if recorded:
            return spaces_of(recorded)
        if not isinstance(vectors, dict):
            return {}
        dense = {
            name: SpaceSpec(name, params.size, str(recorded.get(name, {}).get("model", "")))
            for name, params in vectors.items()
        }
        sparse = {
            name: SpaceSpec(name, 0, str(recorded.get(name, {}).get("model", "")), sparse=True)
            for name in info.config.params.sparse_vectors or {}
        }
        return dense | sparse

    def ensure_spaces(self, spaces: Sequence[SpaceSpec]) -> None:
        self._forget_layout()  # read again after this
        existing = self.spaces()
        if existing:
            check_spaces(existing, spaces, self.collection)
            self._add_sparse(existing, missing_sparse(existing, spaces))
            return
        options = self._options
        quantization = (
            models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8,
                    quantile=options.quantization_quantile,
                    always_ram=options.quantization_always_ram,
                )
            )
            if options.scalar_quantization
            else None
        )
        hnsw = (
            models.HnswConfigDiff(m=options.hnsw_m, ef_construct=options.hnsw_ef_construct)
            if options.hnsw_m is not None or options.hnsw_ef_construct is not None
            else None
        )
        self._client.create_collection(
            self.collection,
            vectors_config={
                s.name: models.VectorParams(
                    size=s.dim, distance=models.Distance.COSINE, on_disk=options.vectors_on_disk
                )
                for s in spaces
                if not s.sparse
            },
            sparse_vectors_config={
                s.name: models.SparseVectorParams(modifier=models.Modifier.IDF) for s in spaces if s.sparse
            },
            shard_number=options.shard_number,
            replication_factor=options.replication_factor,
            write_consistency_factor=options.write_consistency_factor,
            on_disk_payload=options.on_disk_payload,
            hnsw_config=hnsw,
            optimizers_config=(
                models.OptimizersConfigDiff(indexing_threshold=options.indexing_threshold_kb)
                if options.indexing_threshold_kb is not None
                else None
            ),
            quantization_config=quantization,
            metadata={METADATA_KEY: record_of(spaces)},
        )
        if self._remote:  # local mode has no payload indexes (and warns if asked)
            for field in ("modality", "id", "video_id", "doc_id"):
                self._client.create_payload_index(self.collection, field, models.PayloadSchemaType.KEYWORD)

    def _add_sparse(self, existing: dict[str, SpaceSpec], added: list[SpaceSpec]) -> None:
        """Add sparse spaces to a collection made without them, where the service allows it; else warn once and
        write without them (keyword search then needs a new collection)."""
        if not added:
            return
        try:
            self._client.update_collection(
                self.collection,
                sparse_vectors_config={s.name: models.SparseVectorParams(modifier=models.Modifier.IDF) for s in added},
                metadata={METADATA_KEY: record_of([*existing.values(), *added])},
            )
            self._forget_layout()
        except Exception as exc:
            log.warning(
                "collection %r has no sparse vector %s and it cannot be added (%s): points are written without "
                "it, so keyword and hybrid search need a new collection (EMBEDSTREAM_QDRANT__COLLECTION)",
                self.collection,
                [s.name for s in added],
                exc,
            )

    def upsert(self, points: Sequence[PointRecord]) -> None:
        if not points:
            return
        vectors = self._writer(lambda v: models.SparseVector(indices=v.indices, values=v.values))
        self._client.upsert(
            self.collection,
            points=[models.PointStruct(id=p.id, vector=vectors(p), payload=p.payload) for p in points],
            wait=True,
        )

    def upsert_newer(self, points: Sequence[PointRecord]) -> None:
        """A Qdrant server applies ``update_filter`` from 1.17 (qdrant-client's local mode does too)."""
        versioned, plain = split_versioned(points)
        self.upsert(plain)
        if versioned:
            vectors = self._writer(lambda v: models.SparseVector(indices=v.indices, values=v.values))
            self._client.upsert(
                self.collection,
                points=[models.PointStruct(id=p.id, vector=vectors(p), payload=p.payload) for p, _ in versioned],
                update_filter=_replaceable(versioned),
                wait=True,
            )

    def delete_older(self, where: Where, version: Version) -> None:
        condition = _filter(where)
        if condition is not None:
            older = models.Filter(must=[condition, _stored_before(version, inclusive=False)])
            self._client.delete(self.collection, points_selector=models.FilterSelector(filter=older), wait=True)

    def compact_tombstones(self, before_ms: int) -> None:
        old = models.Filter(
            must=[
                models.FieldCondition(key="modality", match=models.MatchValue(value=TOMBSTONE)),
                models.FieldCondition(key=DELETED_KEY, range=models.Range(lt=before_ms)),
            ]
        )
        self._client.delete(self.collection, points_selector=models.FilterSelector(filter=old), wait=True)

    def delete(self, ids: Sequence[str], where: Where | None = None) -> None:
        if ids:
            self._client.delete(self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)
        condition = _filter(where)
        if condition is not None:
            self._client.delete(self.collection, points_selector=models.FilterSelector(filter=condition), wait=True)

    def flush(self) -> None:
        """Nothing to do: ``upsert(wait=True)`` returns after the server's WAL has the points."""

    def search(self, space: str, vector: Sequence[float], limit: int = 10, where: Where | None = None) -> list[Hit]:
        return self.search_batch([SearchRequest(space, vector, limit, where)])[0]

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        batch = [_query(r, self._searched_name(r), self._params) for r in requests]
        answers = self._client.query_batch_points(self.collection, requests=batch)
        return [[Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in a.points] for a in answers]

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False, tombstones: bool = False) -> list[StoredPoint]:
        records = self._client.retrieve(self.collection, list(ids), with_payload=True, with_vectors=with_vectors)
        stored = self._reader()
        return [
            stored(r.id, r.payload, r.vector if with_vectors else None)
            for r in records
            if tombstones or not is_tombstone(r.payload)
        ]

    def scroll(
        self,
        with_vectors: bool = False,
        where: Where | None = None,
        having: str | None = None,
        lacking: str | None = None,
        limit: int | None = None,
    ) -> Iterator[StoredPoint]:
        condition = _filter(where, having, lacking)

        def fetch(offset: Any, size: int) -> Any:
            return self._client.scroll(
                self.collection,
                scroll_filter=condition,
                limit=size,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors,
            )

        stored = self._reader()
        for record in paged(fetch, limit):
            yield stored(record.id, record.payload, record.vector if with_vectors else None)

    def count(self, where: Where | None = None, having: str | None = None, lacking: str | None = None) -> int:
        condition = _filter(where, having, lacking)
        return int(self._client.count(self.collection, count_filter=condition, exact=True).count)

    def optimize(self) -> bool:
        """A Qdrant server (and local mode) indexes in the background: nothing to do here."""
        return False

    def awaiting_index(self) -> int:
        return 0

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self._client.set_payload(self.collection, payload=payload, points=list(ids), wait=True)

    def count_vectors(self, space: str) -> int:
        return self.count(having=self._searched_vector(space))

    def files(self) -> Path:
        if self._remote or self._path == ":memory:":
            raise UsageError(
                "a Qdrant server snapshots its own collections (POST /collections/NAME/snapshots); embedstream's "
                "record of the spaces is in the collection's metadata, so it travels inside; an in-memory store "
                "has no files"
            )
        return Path(self._path)

    def add_vector(self, name: str, dim: int) -> None:
        config = models.DenseVectorConfig(size=dim, distance=models.Distance.COSINE)
        self._client.create_vector_name(self.collection, name, models.DenseVectorNameConfig(dense=config))

    def drop_vector(self, name: str) -> None:
        self._client.delete_vector_name(self.collection, name)

    def record_spaces(self, spaces: Sequence[SpaceSpec]) -> None:
        self._client.update_collection(self.collection, metadata={METADATA_KEY: record_of(spaces)})
        self._forget_layout()

    def update_vectors(self, vectors: VectorUpdates, lacking: str) -> None:
        if not vectors:
            return
        condition = _filter(None, lacking=lacking)

        def update(batch: VectorUpdates) -> None:
            points = [
                models.PointVectors(id=pid, vector={k: [float(x) for x in v] for k, v in named.items()})
                for pid, named in batch.items()
            ]
            self._client.update_vectors(self.collection, points, update_filter=condition, wait=True)

        def held(ids: list[str]) -> set[str]:
            return {str(r.id) for r in self._client.retrieve(self.collection, ids, with_payload=False)}

        update_existing(update, held, vectors)

    def close(self) -> None:
        self._client.close()
