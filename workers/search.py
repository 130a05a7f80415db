"""Search the store with a text, a picture or a sound: embed the query into a space, return the nearest points.

Which model embeds a query follows from what the query is and which space is searched:

| query   | space (default first)                        | model                                  |
|---------|----------------------------------------------|----------------------------------------|
| text    | the text model's (`minilm`)                  | `model.text_model`                     |
| picture | `effnet`; `minilm` (ConSE); `fused`          | `image_model`; `image_text_model`      |
| sound   | `voice`; `fused`                             | `audio_model`                          |

A picture or a sound searched in `fused` (videos' visual⊕audio vectors) is placed in its own half with the
other half zero, scaled by the fusion weights, so it matches videos by what they show or by who speaks.
Queries are decoded exactly as ingestion decodes events (same limits, same preprocessing), so a picture finds
its own point with score 1.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embedstream.onnx_models.audio_encoder import AudioEncoder
from embedstream.onnx_models.bm25 import BM25_SPACE, Bm25
from embedstream.onnx_models.encoders import AnyEncoder, load_encoder
from embedstream.onnx_models.image_encoder import ImageEncoder
from embedstream.onnx_models.manifest import ModelManifest
from embedstream.onnx_models.registry import load_manifest
from embedstream.onnx_models.vectors import fuse
from embedstream.pipelines.media.audio import decode_audio
from embedstream.pipelines.media.images import decode_image
from embedstream.pipelines.plan import FUSED_SPACE
from embedstream.pipelines.stores import Hit, SearchRequest, VectorStore, open_store
from embedstream.schemas.errors import NotFoundError, UsageError
from embedstream.schemas.point import SparseVector
from embedstream.schemas.settings import Settings
from embedstream.workers.fusion import diversify, fuse_lists, keyword_weight
from embedstream.workers.grouping import Group, candidates, distinct_passages, group_hits
from embedstream.workers.query_batcher import QueryBatcher

Where = Mapping[str, str | int | bool]
# A payload path a filter may name: dotted keys of letters, digits, _ and -, each with an optional [] or [N].
# Qdrant's JSON paths allow more (quoted keys), but an empty or malformed path is an error inside the engine.
FILTER_KEY = r"^[A-Za-z0-9_-]+(\[\d{0,9}\])?(\.[A-Za-z0-9_-]+(\[\d{0,9}\])?)*$"


def check_filter(where: Where) -> None:
    """Refuse a filter key the store cannot take, naming it (a ``UsageError``)."""
    for key, value in where.items():
        if not re.fullmatch(FILTER_KEY, key):
            raise UsageError(f"filter key {key!r} is not a payload path like metadata.topic or tags[]")
        if isinstance(value, int) and not -(2**53) <= value <= 2**53:
            raise UsageError(f"filter value {value} of {key!r} is beyond the integers JSON carries exactly (2^53)")


def parse_where(pairs: list[str]) -> dict[str, str | int | bool]:
    """``key=value`` filters on payload fields (``metadata.topic=space``); ints and booleans are typed."""
    where: dict[str, str | int | bool] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"filter {pair!r} is not key=value")
        check_filter({key: raw})
        value: str | int | bool = raw
        if raw in ("true", "false"):
            value = raw == "true"
        elif raw.lstrip("-").isdigit():
            value = int(raw)
        where[key] = value
    return where


def conditions(where: Where | None, modality: str | None) -> dict[str, str | int | bool] | None:
    """Payload filters plus the modality restriction, or None for no filter."""
    merged = dict(where or {})
    if modality:
        merged["modality"] = modality
    return merged or None


@dataclass(frozen=True)
class Query:
    """What to search with: a text, or the bytes of a picture or a sound."""

    kind: Literal["text", "image", "audio"]
    text: str | None = None
    data: bytes | None = None

    @classmethod
    def of_text(cls, text: str) -> Query:
        return cls("text", text=text)

    @classmethod
    def of_image(cls, data: bytes) -> Query:
        return cls("image", data=data)

    @classmethod
    def of_audio(cls, data: bytes) -> Query:
        return cls("audio", data=data)


SearchMode = Literal["auto", "dense", "sparse", "hybrid"]
HYBRID_DEPTH = 4  # candidates each list of a hybrid search brings to the fusion, per result asked for
# ...and at least this many: the fusion weighs each list by how far its top stands out from the rest, which four
# candidates (a search for one result) cannot tell; 40 is the depth its weights were measured at (k = 10)
HYBRID_MIN_DEPTH = 40
NESTED_DEPTH = 3  # hits asked for per result wanted, so that collapsing nested passages still fills the limit
SPARSE_RECHECK_S = 5.0  # how long "this collection has no keyword vectors" is believed before asking again


@dataclass(frozen=True)
class TextQuery:
    """One text search as asked (``Searcher.search``, ``search_text``): what waits in the text batcher until a
    runner resolves it (``Searcher._resolved``) with the others of its batch."""

    text: str
    space: str | None
    limit: int
    where: Where | None
    modality: str | None
    mode: SearchMode | None
    diversity: float
    collapse: bool = True  # nested passages shown once (``distinct_passages``); grouped search groups them itself


@dataclass(frozen=True)
class TextSearch:
    """One text search resolved: the space, filters, mode and named vector it is searched with. ``limit`` hits
    are answered; with ``collapse``, ``NESTED_DEPTH`` times as many are ranked and nested passages among them
    collapsed (``distinct_passages``) before the first ``limit`` are kept. The fusion's statistics depend on
    ``limit`` only, so collapsing does not change how a hybrid search ranks."""

    text: str
    space: str
    limit: int
    where: Where | None
    mode: SearchMode = "dense"  # never auto: resolved (``Searcher.mode_for``)
    diversity: float = 0.0
    vector_name: str | None = None  # the named vector searched, as resolved with the model (``Searcher.searched``)
    collapse: bool = False

    @property
    def fused_depth(self) -> int:
        """How many candidates each list of a hybrid (or re-ranked keyword) search brings."""
        return max(self.limit * HYBRID_DEPTH, HYBRID_MIN_DEPTH)

    @property
    def ranked(self) -> int:
        return ranked(self.limit, self.collapse)


def ranked(limit: int, collapse: bool) -> int:
    """How many hits a search ranks to answer ``limit`` of them once nested passages are collapsed."""
    return limit * NESTED_DEPTH if collapse else limit


class Searcher:
    """Holds encoders (loaded on first use) and the store open for many queries."""

    def __init__(
        self, settings: Settings, store: VectorStore | None = None, on_batch: Callable[[int], None] | None = None
    ) -> None:
        """``on_batch``: told the size of each batch of concurrent text queries encoded together."""
        self.settings = settings
        self._on_batch = on_batch
        self.store = store if store is not None else open_store(settings.qdrant)
        self._encoders: dict[str, AnyEncoder] = {}
        self._manifests: dict[str, ModelManifest] = {}
        self._routes: dict[str, dict[str, str]] = {}
        self._texts = QueryBatcher(self._answer_texts, runners=settings.api.query_runners, on_batch=on_batch)
        self._bm25 = Bm25()
        self._has_sparse = False
        self._sparse_checked_at = -SPARSE_RECHECK_S

    def encoder(self, name: str) -> AnyEncoder:
        """``name``'s encoder, loaded once. Its ORT threads sleep between queries unless the settings say: a
        spinning thread takes the core the server's request threads need (serve_load: +17 % requests/s)."""
        if name not in self._encoders:
            model = self.settings.model.sleeping_unless_set()
            self._encoders[name] = load_encoder(model.cache_dir, name, model)
        return self._encoders[name]

    def spaces_for(self, kind: str) -> dict[str, str]:
        """Space → the model that embeds a ``kind`` query into it (the first is the default space); read from
        the manifests once per kind, not per query."""
        if kind not in self._routes:
            model = self.settings.model

            def space(name: str) -> str:
                return self._manifest(name).space

            if kind == "text":
                routes = {space(model.text_model): model.text_model}
            elif kind == "image":
                routes = {space(model.image_model): model.image_model}
                if model.image_text_model:
                    routes[space(model.image_text_model)] = model.image_text_model
                routes[FUSED_SPACE] = model.image_model
            else:
                routes = {space(model.audio_model): model.audio_model, FUSED_SPACE: model.audio_model}
            self._routes[kind] = routes
        return self._routes[kind]

    def resolve(self, kind: str, space: str | None) -> tuple[str, str]:
        """(space, model) for a ``kind`` query: ``space`` if the query can search it, else its default space."""
        spaces = self.spaces_for(kind)
        space = space or next(iter(spaces))
        if space not in spaces:
            held = self.store.spaces()
            if space not in held:  # no such space at all: a missing resource, not a malformed request
                raise NotFoundError(f"the collection has no space {space!r}; it has {sorted(held)}")
            raise UsageError(f"a {kind} query cannot search space {space!r}; it can search {sorted(spaces)}")
        return space, spaces[space]

    def vector(self, query: Query, space: str | None = None) -> tuple[str, np.ndarray]:
        """The query embedded into ``space`` (default: the query kind's own space) → (space, vector)."""
        space, _, vector = self.embedded(query, space)
        return space, vector

    def embedded(self, query: Query, space: str | None = None) -> tuple[str, str | None, np.ndarray]:
        """(space, named vector, vector): the query embedded by the model ``space`` is searched with now (after a
        migration's switch, the new one: ``searched``), and the named vector that model's vectors are in."""
        space, model_name = self.resolve(query.kind, space)
        vector_name = None
        if space != FUSED_SPACE:
            vector_name, model_name = self.searched(space, model_name)
            if self._manifest(model_name).modality != query.kind:
                raise UsageError(
                    f"space {space!r} is searched with {model_name} now (a migration switched it): a {query.kind} "
                    "query has no model into it"
                )
        encoder = self.encoder(model_name)
        media = self.settings.media
        if isinstance(encoder, ImageEncoder):
            image = decode_image(query.data or b"", media.max_image_pixels, encoder.spec.resize_short)
            vector = encoder.embed([image])[0]
        elif isinstance(encoder, AudioEncoder):
            wave = decode_audio(query.data or b"", encoder.sample_rate, media.max_audio_seconds, media.silence_dbfs)
            vector = encoder.embed([wave])[0]
        else:  # routes send a text query only to a text model (spaces_for)
            vector = encoder.embed([query.text or ""])[0]
        if space == FUSED_SPACE:
            model = self.settings.model
            dims = (self._manifest(model.image_model).dim, self._manifest(model.audio_model).dim)
            picture = query.kind == "image"
            weights = self.settings.media.fused_weights
            fused = fuse(vector if picture else None, None if picture else vector, weights, dims)
            if fused is None:
                raise UsageError(f"the fused weights {self.settings.media.fused_weights} give a {query.kind} no weight")
            vector = fused
        return space, vector_name, vector

    def _manifest(self, name: str) -> ModelManifest:
        if name not in self._manifests:
            self._manifests[name] = load_manifest(self.settings.model.cache_dir, name, verify=False)[0]
        return self._manifests[name]

    def search(
        self,
        query: Query,
        space: str | None = None,
        limit: int = 5,
        where: Where | None = None,
        modality: str | None = None,
        mode: SearchMode | None = None,
        diversity: float = 0.0,
    ) -> list[Hit]:
        """The ``limit`` best points, nested passages collapsed (``grouping.distinct_passages``: a sentence, the
        passage around it and their document are one answer, the best of them). ``mode`` (text queries):
        ``dense`` (the text model's space), ``sparse`` (BM25 keywords: names, codes, rare words), ``hybrid``
        (both, fused: ``api.hybrid_fusion``) or ``auto`` (``mode_for``); None: ``api.search_mode``.
        ``diversity`` (0..1, every mode): maximal marginal relevance by the dense vectors — near-duplicates
        give way to other relevant points."""
        return self._search(query, space, limit, where, modality, mode, diversity, collapse=True)

    def _search(
        self,
        query: Query,
        space: str | None,
        limit: int,
        where: Where | None,
        modality: str | None,
        mode: SearchMode | None,
        diversity: float,
        collapse: bool,
    ) -> list[Hit]:
        """``search``; without ``collapse``, nested passages stay (grouped search groups them itself)."""
        if query.kind != "text":
            _check_diversity(diversity)
            chosen = self.mode_for(query.kind, mode)
            if chosen != "dense":
                raise UsageError(f"{chosen} search needs a text query (keywords); a {query.kind} query is dense only")
            space, vector_name, vector = self.embedded(query, space)
            where = conditions(where, modality)
            depth = ranked(limit, collapse)
            asked = SearchRequest(
                space, vector.tolist(), depth, where, diversity=diversity, vector_name=vector_name, mmr_for=limit
            )
            found = self.store.search_batch([asked])[0]
            return distinct_passages(found, limit) if collapse else found
        text = TextQuery(query.text or "", space, limit, where, modality, mode, diversity, collapse)
        return (self._texts.answer(text) if self.settings.api.batch_queries else self._text_alone(text))[1]

    def mode_for(self, kind: str, mode: SearchMode | None) -> SearchMode:
        """The mode a search runs in: ``mode``, else ``api.search_mode``; ``auto`` is ``hybrid`` for a text query
        on a collection with keyword vectors (measured best on the three kinds of question together:
        ``bench/reports/retrieval.md``), else ``dense`` (a picture or a sound; a collection made with
        ``model.bm25`` off, which an explicit ``hybrid`` would refuse). The setting is for text queries: a
        picture or a sound that names no mode is searched dense whatever it says."""
        if mode is None and kind != "text":
            return "dense"
        chosen = mode or self.settings.api.search_mode
        if chosen != "auto":
            return chosen
        return "hybrid" if kind == "text" and self._holds_sparse() else "dense"

    async def search_text(
        self,
        text: str,
        space: str | None = None,
        limit: int = 5,
        where: Where | None = None,
        modality: str | None = None,
        mode: SearchMode | None = None,
        diversity: float = 0.0,
    ) -> tuple[str, list[Hit]]:
        """(the space searched, its hits): ``search`` of a text, awaited on an event loop (the API's path). With
        ``api.batch_queries`` the request waits for its batch without holding a thread, and everything that may
        read the store (the space's resolution included) runs on the batcher's threads, never on the loop;
        without, it runs alone on a worker thread."""
        asked = TextQuery(text, space, limit, where, modality, mode, diversity)
        if self.settings.api.batch_queries:
            return await self._texts.answer_async(asked)
        return await asyncio.to_thread(self._text_alone, asked)

    def searched(self, space: str, model_name: str) -> tuple[str | None, str]:
        """(named vector, model) a search of ``space`` with a query for ``model_name`` uses now. A migration
        (``pipelines.spaces``) may have switched the space to another model's vectors: the store's record says
        (``VectorStore.layout``: at most a second old, at once after a step this process took), so the API and the
        CLI follow a switch without a restart. The pair is resolved together, so a query is never embedded by one
        model and compared with another's vectors. ``model_name`` stays when its vectors are the ones searched
        (``space_ref``: a ConSE picture query into the text space it maps into, too)."""
        spec = self.store.layout().spaces.get(space)
        if spec is None or not spec.model:
            return None, model_name
        vector, model, _ = spec.searched
        return vector, model_name if self._manifest(model_name).space_ref == model else model

    def search_documents(
        self,
        query: Query,
        space: str | None = None,
        limit: int = 5,
        where: Where | None = None,
        modality: str | None = None,
        mode: SearchMode | None = None,
        per_group: int = 3,
        diversity: float = 0.0,
    ) -> list[Group]:
        """The ``limit`` best documents (videos, single points) by their best hit, each with its point and its
        ``per_group`` best passages (chunks with their character offsets): ``workers.grouping``."""
        hits = self._search(query, space, candidates(limit), where, modality, mode, diversity, collapse=False)
        return group_hits(hits, limit, per_group, self.store.retrieve)

    def _holds_sparse(self) -> bool:
        """Does the collection hold keyword vectors? Once it does, it always will: a yes is kept; a no is asked
        again after ``SPARSE_RECHECK_S`` (the collection may be made anew), not on every query (a store call)."""
        now = time.monotonic()
        if not self._has_sparse and now - self._sparse_checked_at >= SPARSE_RECHECK_S:
            self._has_sparse = BM25_SPACE in self.store.spaces()
            self._sparse_checked_at = now
        return self._has_sparse

    def _check_sparse(self) -> None:
        if not self._holds_sparse():
            raise NotFoundError(
                f"the collection has no sparse vector {BM25_SPACE!r} for keyword search: it was made before "
                "keyword search or with model.bm25 off; ingest into a new collection to search by keywords"
            )

    def _resolved(self, asked: TextQuery) -> tuple[str, TextSearch]:
        """(model, search): the space a text search asked for (or the default) resolved with the model and named
        vector searched now, its filters built, its mode checked."""
        _check_diversity(asked.diversity)
        space, model_name = self.resolve("text", asked.space)
        vector_name, model_name = self.searched(space, model_name)
        mode = self.mode_for("text", asked.mode)
        if mode != "dense":
            self._check_sparse()
        where = conditions(asked.where, asked.modality)
        return model_name, TextSearch(
            asked.text, space, asked.limit, where, mode, asked.diversity, vector_name, asked.collapse
        )

    def _text_alone(self, asked: TextQuery) -> tuple[str, list[Hit]]:
        outcome = self._answer_texts([asked])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _answer_texts(self, batch: Sequence[TextQuery]) -> list[tuple[str, list[Hit]] | Exception]:
        """Text searches answered together, one outcome each: every search resolved on its own (one that asks
        for a space it cannot search fails alone), then one encoder call and one store call per model."""
        outcomes: dict[int, tuple[str, list[Hit]] | Exception] = {}
        by_model: dict[str, list[tuple[int, TextSearch]]] = {}
        for index, asked in enumerate(batch):
            try:
                model_name, wanted = self._resolved(asked)
            except Exception as exc:  # this search's own fault (or the store's, which each then meets alike)
                outcomes[index] = exc
                continue
            by_model.setdefault(model_name, []).append((index, wanted))
        for model_name, group in by_model.items():
            found = self._text_searches(model_name, [wanted for _, wanted in group])
            for (index, wanted), hits in zip(group, found, strict=True):
                kept = distinct_passages(hits, wanted.limit) if wanted.collapse else hits
                outcomes[index] = (wanted.space, kept)
        return [outcomes[index] for index in range(len(batch))]

    def _text_searches(self, model_name: str, batch: Sequence[TextSearch]) -> list[list[Hit]]:
        """Text searches answered together: one encoder call for those that need a dense vector, one store call
        for every list (a hybrid search asks for both, ``HYBRID_DEPTH`` times deeper, and fuses them)."""
        dense = [w for w in batch if w.mode != "sparse"]
        embedded = iter(self.encoder(model_name).embed([w.text for w in dense]) if dense else ())
        requests: list[SearchRequest] = []
        keywords: list[SparseVector | None] = []  # each search's query terms, computed once (hybrid weighs by them)
        for w in batch:  # the embedded rows are in the order of the dense searches, which keep the batch's order
            deeper = w.mode == "hybrid" or (w.mode == "sparse" and w.diversity > 0)  # fused or re-ranked after
            depth = w.fused_depth if deeper else w.ranked
            if w.mode != "sparse":  # hybrid diversifies the fused list, dense lets the store do it
                diversity = w.diversity if w.mode == "dense" else 0.0
                vector, name = next(embedded).tolist(), w.vector_name
                requests.append(  # MMR's pool sized for the hits shown (mmr_for), not for the deeper ranking
                    SearchRequest(
                        w.space, vector, depth, w.where, diversity=diversity, vector_name=name, mmr_for=w.limit
                    )
                )
            keywords.append(self._bm25.query(w.text) if w.mode != "dense" else None)
            if keywords[-1] is not None:
                requests.append(SearchRequest(w.space, None, depth, w.where, keywords[-1]))
        lists = iter(self.store.search_batch(requests))
        answers = []
        for w, terms in zip(batch, keywords, strict=True):
            if w.mode == "hybrid" and terms is not None:
                answers.append(self._hybrid(w, next(lists), next(lists), terms))
            elif w.mode == "sparse" and w.diversity > 0:  # keywords find, the dense vectors tell near-duplicates
                answers.append(self._diversified(w, next(lists)))
            else:
                answers.append(next(lists))
        return answers

    def _hybrid(self, wanted: TextSearch, dense: list[Hit], sparse: list[Hit], keywords: SparseVector) -> list[Hit]:
        """The two lists fused (``api.hybrid_fusion``), the keyword list weighed by how much of the query its
        best hit holds (``fusion.keyword_weight``); with ``diversity``, re-ranked by MMR over the fused
        candidates' dense vectors (``fusion.diversify``)."""
        depth = wanted.fused_depth
        weights = [1.0, self._keyword_weight(keywords, sparse)]
        fusion = self.settings.api.hybrid_fusion
        if not wanted.diversity:
            return fuse_lists([dense, sparse], wanted.ranked, fusion, depth, weights)
        return self._diversified(wanted, fuse_lists([dense, sparse], depth, fusion, depth, weights))

    def _diversified(self, wanted: TextSearch, candidates: list[Hit]) -> list[Hit]:
        """``candidates`` re-ranked by MMR over their dense vectors in the searched space (``fusion.diversify``):
        hybrid and keyword lists, which the store cannot diversify itself."""
        found = self.store.retrieve([h.id for h in candidates], with_vectors=True)
        vectors = {p.id: p.vectors[wanted.space] for p in found if wanted.space in p.vectors}
        return diversify(candidates, vectors, wanted.ranked, wanted.diversity)

    def _keyword_weight(self, keywords: SparseVector, sparse: list[Hit]) -> float:
        if not sparse:
            return 1.0
        best = self._bm25.document(str(sparse[0].payload.get("text") or ""))
        return keyword_weight(keywords.indices, best.indices)

    def like_point(
        self,
        point_id: str,
        space: str,
        limit: int = 5,
        where: Where | None = None,
        modality: str | None = None,
    ) -> list[Hit]:
        """Points nearest to a stored point's vector in ``space`` (the point itself left out)."""
        return self.recommend([point_id], [], space, limit, where, modality)

    def recommend(
        self,
        positive: list[str],
        negative: list[str],
        space: str,
        limit: int = 5,
        where: Where | None = None,
        modality: str | None = None,
    ) -> list[Hit]:
        """Qdrant's ``average_vector`` rule: search with ``2·mean(positive) − mean(negative)`` (just the positive
        mean without negatives); the example points themselves are left out of the results."""
        if not positive:
            raise UsageError("recommend needs at least one positive point id")
        found = {p.id: p for p in self.store.retrieve([*positive, *negative], with_vectors=True)}
        missing = [i for i in [*positive, *negative] if i not in found]
        if missing:
            raise NotFoundError(f"no point(s) {missing}")
        spaces = self.store.layout().spaces
        if space not in spaces:
            raise NotFoundError(f"the collection has no space {space!r}; it has {sorted(spaces)}")
        lacking = [i for i in found if space not in found[i].vectors]
        if lacking:
            raise NotFoundError(f"point(s) {lacking} have no vector in space {space!r}")
        mean_pos = np.mean([found[i].vectors[space] for i in positive], axis=0)
        query = 2 * mean_pos - np.mean([found[i].vectors[space] for i in negative], axis=0) if negative else mean_pos
        examples = set(positive) | set(negative)
        hits = self.store.search(space, query.tolist(), limit + len(examples), conditions(where, modality))
        return [hit for hit in hits if hit.id not in examples][:limit]

    def close(self) -> None:
        self._texts.close()
        self.store.close()


def _check_diversity(diversity: float) -> None:
    if not 0.0 <= diversity <= 1.0:
        raise UsageError(f"diversity {diversity} is not between 0 and 1")


def search_once(
    settings: Settings,
    query: Query,
    space: str | None = None,
    limit: int = 5,
    where: Where | None = None,
    modality: str | None = None,
    mode: SearchMode | None = None,
    diversity: float = 0.0,
) -> list[Hit]:
    searcher = Searcher(settings)
    try:
        return searcher.search(query, space, limit, where, modality, mode, diversity)
    finally:
        searcher.close()


def search_documents_once(
    settings: Settings,
    query: Query,
    space: str | None = None,
    limit: int = 5,
    where: Where | None = None,
    modality: str | None = None,
    mode: SearchMode | None = None,
    per_group: int = 3,
    diversity: float = 0.0,
) -> list[Group]:
    searcher = Searcher(settings)
    try:
        return searcher.search_documents(query, space, limit, where, modality, mode, per_group, diversity)
    finally:
        searcher.close()
