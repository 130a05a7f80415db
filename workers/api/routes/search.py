"""Search operations: a text or a point (JSON), a picture or a sound (multipart), recommendations."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from embedstream.pipelines.stores import Hit
from embedstream.schemas.errors import NotFoundError, UsageError
from embedstream.workers.api.deps import SearcherDep, SettingsDep, requires
from embedstream.workers.api.errors import FORM_TYPES, JSON_TYPES, ApiError, answered, blocking
from embedstream.workers.api.models import (
    DocumentOut,
    DocumentSearch,
    DocumentsResponse,
    Filter,
    HitOut,
    PassageOf,
    PassageOut,
    PointSearch,
    Problem,
    RecommendRequest,
    SearchRequest,
    SearchResponse,
)
from embedstream.workers.grouping import Group, passage_of
from embedstream.workers.search import Query, Searcher, SearchMode, check_filter

router = APIRouter(tags=["search"], dependencies=[Depends(requires("read"))])
WRONG_TYPE: dict[int | str, dict[str, Any]] = {
    415: {"model": Problem, "description": "the body is not of the declared media type"}
}


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=WRONG_TYPE,
    openapi_extra={"x-accepts": list(JSON_TYPES)},
)
async def search(body: SearchRequest, searcher: SearcherDep) -> SearchResponse:
    """A text, or an existing point's id ("more like this") → the nearest points."""
    if isinstance(body, PointSearch):
        point_id = str(body.point_id)
        space = body.space
        if space is None:
            space = await blocking(lambda: _default_space_of(searcher, point_id))
        hits = await blocking(lambda: searcher.like_point(point_id, space, body.k, body.where, body.modality))
        return SearchResponse(space=space, query="point", hits=_hits(hits))
    query = Query.of_text(body.text)
    return await _run(searcher, query, body.space, body.k, body.where, body.modality, body.mode, body.diversity)


@router.post(
    "/search/documents",
    response_model=DocumentsResponse,
    responses=WRONG_TYPE,
    openapi_extra={"x-accepts": list(JSON_TYPES)},
)
async def search_documents(body: DocumentSearch, searcher: SearcherDep) -> DocumentsResponse:
    """A text → the best documents, each with its best passages (chunks located by character offsets)."""
    query = Query.of_text(body.text)

    def work() -> tuple[str, list[Group]]:
        chosen = searcher.resolve("text", body.space)[0]
        found = searcher.search_documents(
            query, chosen, body.k, body.where, body.modality, body.mode, body.per_document, body.diversity
        )
        return chosen, found

    chosen, groups = await blocking(work)
    documents = [
        DocumentOut(
            kind=g.key[0],
            id=g.key[1],
            score=g.score,
            point_id=uuid.UUID(g.owner_id),
            payload=g.owner,
            passages=[PassageOut(id=uuid.UUID(p.id), score=p.score, payload=p.payload) for p in g.passages],
        )
        for g in groups
    ]
    return DocumentsResponse(space=chosen, documents=documents)


@router.post(
    "/search/file",
    response_model=SearchResponse,
    responses={**WRONG_TYPE, 413: {"model": Problem, "description": "the file is over the event size limit"}},
    openapi_extra={"x-accepts": list(FORM_TYPES)},
)
async def search_file(
    searcher: SearcherDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="a picture or a sound, as ingestion would accept it")],
    kind: Annotated[Literal["image", "audio"], Form(description="what the file is")],
    space: Annotated[str | None, Form(description="named vector; default: the file's own space")] = None,
    k: Annotated[int, Form(ge=1, le=200)] = 10,
    where: Annotated[str, Form(description="a JSON object of payload equality filters")] = "{}",
    modality: Annotated[str | None, Form(description="only points of this modality")] = None,
) -> SearchResponse:
    """A picture or a sound file → the nearest points (in its own space, or one it maps into)."""
    limit = settings.pipeline.max_event_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"the file is over the limit of {limit} bytes")
    filters = _filters(where)
    query = Query.of_image(data) if kind == "image" else Query.of_audio(data)
    return await _run(searcher, query, space or None, k, filters, modality or None)


@router.post("/recommend", response_model=SearchResponse)
async def recommend(body: RecommendRequest, searcher: SearcherDep) -> SearchResponse:
    """Points like the ``positive`` ones and unlike the ``negative`` ones, in one space."""
    positive = [str(p) for p in body.positive]
    negative = [str(p) for p in body.negative]
    hits = await blocking(lambda: searcher.recommend(positive, negative, body.space, body.k, body.where, body.modality))
    return SearchResponse(space=body.space, query="recommend", hits=_hits(hits))


async def _run(
    searcher: Searcher,
    query: Query,
    space: str | None,
    k: int,
    where: Filter,
    modality: str | None,
    mode: SearchMode | None = None,
    diversity: float = 0.0,
) -> SearchResponse:
    if query.kind == "text":  # waits for its batch without a thread (Searcher.search_text)
        text = query.text or ""
        chosen, hits = await answered(searcher.search_text(text, space, k, where, modality, mode, diversity))
    else:

        def work() -> tuple[str, list[Hit]]:
            chosen = searcher.resolve(query.kind, space)[0]
            return chosen, searcher.search(query, chosen, k, where, modality, mode, diversity)

        chosen, hits = await blocking(work)
    return SearchResponse(space=chosen, query=query.kind, hits=_hits(hits))


def _filters(where: str) -> Filter:
    try:
        parsed = json.loads(where or "{}")
    except ValueError as exc:
        raise ApiError(422, f"where: not JSON: {exc}") from exc
    if not isinstance(parsed, dict) or not all(isinstance(v, str | int | bool) for v in parsed.values()):
        raise ApiError(422, "where: a JSON object of strings, numbers or booleans")
    try:
        check_filter(parsed)
    except UsageError as exc:
        raise ApiError(422, f"where: {exc}") from exc
    return {str(key): value for key, value in parsed.items()}


def _default_space_of(searcher: Searcher, point_id: str) -> str:
    """A point's first space by the order of the spaces its modality is embedded in (text: minilm…)."""
    found = searcher.store.retrieve([point_id], with_vectors=True)
    if not found:
        raise NotFoundError(f"no point {point_id}")
    return next(iter(found[0].vectors))


def _hits(hits: list[Hit]) -> list[HitOut]:
    return [HitOut(id=uuid.UUID(h.id), score=h.score, document=_passage(h.payload), payload=h.payload) for h in hits]


def _passage(payload: dict[str, Any]) -> PassageOf | None:
    where = passage_of(payload)
    return None if where is None else PassageOf.model_validate(where)
