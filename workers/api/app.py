"""The search API (FastAPI) over the configured store, and the web page that uses it.

Endpoints: ``POST /search`` (JSON: a text or a point id; multipart: a picture or sound file), ``POST
/recommend``, ``GET /points/{id}``, ``GET /spaces``, ``GET /healthz``, ``GET /metrics`` (Prometheus), the
OpenAPI schema at ``/openapi.json`` (docs at ``/docs``) and the page at ``/``.

Access (``auth.py``): with ``api.keys`` configured every endpoint but ``/healthz`` and the page's files needs
a key (401 without one, 403 for a key of too small a scope, 429 over ``api.rate_per_s``), all as ``Problem``
bodies; CORS is off unless ``api.cors_origins`` lists origins.

Errors are part of the contract: a bad request gets a 4xx with a ``Problem`` body that says what was wrong
(and, for an undecodable upload, the dead-letter reason code ingestion would give it) — 400 for a query that
cannot run (a space the query cannot search), 404 for an unknown point, 413 for an upload over the event size
limit, 415 for an unsupported content type, 422 for an invalid body or file. Only a fault of ours is a 500.

Threads: FastAPI runs the blocking work in its thread pool. ONNX Runtime sessions are safe to share; store
calls are serialized (``SharedStore``), which also makes the API safe beside an in-process pipeline.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError

from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.stores import Hit, NoCollectionError, open_store
from embedstream.pipelines.stores.shared import SharedStore
from embedstream.schemas.errors import EmbedstreamError, NotFoundError, UsageError
from embedstream.schemas.settings import Settings
from embedstream.workers.api.auth import Gate
from embedstream.workers.api.models import (
    HitOut,
    PointOut,
    Problem,
    RecommendRequest,
    SearchRequest,
    SearchResponse,
    SpaceOut,
    SpacesResponse,
)
from embedstream.workers.search import Query, Searcher

log = logging.getLogger(__name__)
PAGE = Path(__file__).parent / "page"


class ApiError(Exception):
    def __init__(self, status: int, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason


def create_app(
    settings: Settings, health: Callable[[], str | None] | None = None, store: SharedStore | None = None
) -> FastAPI:
    """The app for ``settings``; the store and encoders open at start-up and close at shutdown. ``health``
    (``serve --ingest``: the in-process pipeline) returns a problem that makes ``/healthz`` answer 503."""
    registry = CollectorRegistry()
    requests = Counter("embedstream_http_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram(
        "embedstream_http_request_seconds",
        "request latency",
        ["endpoint"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    points_gauge = Gauge("embedstream_points", "points in the collection", registry=registry)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Given a store (serve --ingest shares its own with the pipeline), use it and leave closing it to its
        # owner; else open one. Requests run on a thread pool, so calls go through SharedStore's lock.
        shared = store if store is not None else SharedStore(open_store(settings.qdrant))
        state["searcher"] = Searcher(settings, store=shared)
        try:
            yield
        finally:
            if store is None:
                shared.close_owned()

    app = FastAPI(
        title="embedstream",
        version="1",
        summary="Search the vectors of text, pictures, sounds and videos ingested from Kafka.",
        lifespan=lifespan,
        responses={400: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}},
    )

    def searcher() -> Searcher:
        found: Searcher = state["searcher"]
        return found

    gate = Gate(settings.api)

    @app.middleware("http")
    async def authorize(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        client = request.client.host if request.client else "unknown"
        denial = gate.check(request.url.path, request.headers, client)
        if denial is None:
            return await call_next(request)
        headers = {}
        if denial.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if denial.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(denial.retry_after_s)))
        return JSONResponse(Problem(detail=denial.detail).model_dump(), status_code=denial.status, headers=headers)

    if settings.api.cors_origins:  # outside the gate: it answers preflights, which carry no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "api-key", "content-type"],
        )

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        latency.labels(endpoint).observe(time.perf_counter() - started)
        requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(Problem(detail=exc.detail, reason=exc.reason).model_dump(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        problem = Problem(detail=f"{where}: {first.get('msg', 'invalid request')}")
        return JSONResponse(problem.model_dump(), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(Problem(detail=f"internal error: {type(exc).__name__}").model_dump(), status_code=500)

    def run(work: Callable[[], Any]) -> Awaitable[Any]:
        """Blocking work in the thread pool, with every known failure mapped to its status."""

        def guarded() -> Any:
            try:
                return work()
            except MediaError as exc:
                raise ApiError(422, str(exc), exc.reason.value) from exc
            except NoCollectionError as exc:  # no collection yet (serve --ingest before its first write): not ready
                raise ApiError(503, str(exc), "no_collection") from exc
            except NotFoundError as exc:
                raise ApiError(404, str(exc)) from exc
            except UsageError as exc:
                raise ApiError(400, str(exc)) from exc
            except EmbedstreamError as exc:  # a model not built, a store locked or closed: not servable now
                raise ApiError(503, str(exc)) from exc

        return run_in_threadpool(guarded)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE / "index.html")

    app.mount("/static", StaticFiles(directory=PAGE), name="static")

    @app.post(
        "/search",
        response_model=SearchResponse,
        responses={413: {"model": Problem}, 415: {"model": Problem}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": SearchRequest.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file", "kind"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "kind": {"type": "string", "enum": ["image", "audio"]},
                                "space": {"type": "string"},
                                "k": {"type": "integer", "minimum": 1, "maximum": 200},
                                "modality": {"type": "string"},
                                "where": {"type": "string", "description": "JSON object of payload filters"},
                            },
                        }
                    },
                },
            }
        },
    )
    async def search(request: Request) -> SearchResponse:
        """A text, a point id (JSON), or a picture / sound file (multipart) → the nearest points."""
        query, options = await _search_body(request, settings.pipeline.max_event_bytes)
        if query is None:  # a point id: more like this point
            assert options.point_id is not None
            point_id = _point_id(options.point_id)
            space = options.space or await run(lambda: _default_space_of(searcher(), point_id))
            hits = await run(lambda: searcher().like_point(point_id, space, options.k, options.where, options.modality))
            return SearchResponse(space=space, query="point", hits=_hits(hits))

        def work() -> tuple[str, list[Hit]]:
            space = searcher().resolve(query.kind, options.space)[0]
            return space, searcher().search(query, space, options.k, options.where, options.modality)

        space, hits = await run(work)
        return SearchResponse(space=space, query=query.kind, hits=_hits(hits))

    async def _search_body(request: Request, max_bytes: int) -> tuple[Query | None, SearchRequest]:
        """The query (None for a point-id search) and the search options, from a JSON or a multipart body."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                body = SearchRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise ApiError(422, _validation_message(exc)) from exc
            if (body.text is None) == (body.point_id is None):
                raise ApiError(422, "give exactly one of 'text' or 'point_id' (send files as multipart/form-data)")
            return (Query.of_text(body.text) if body.text is not None else None), body
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=10, max_part_size=max_bytes)
            upload, kind = form.get("file"), form.get("kind")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "multipart search needs a 'file' part")
            if kind not in ("image", "audio"):
                raise ApiError(422, "multipart search needs 'kind' = image or audio")
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ApiError(413, f"the file is over the limit of {max_bytes} bytes")
            try:
                options = SearchRequest(
                    space=_text(form.get("space")),
                    k=int(str(form.get("k") or 10)),
                    where=json.loads(str(form.get("where") or "{}")),
                    modality=_text(form.get("modality")),
                )
            except (ValueError, ValidationError) as exc:
                raise ApiError(422, f"bad form field: {exc}") from exc
            return (Query.of_image(data) if kind == "image" else Query.of_audio(data)), options
        raise ApiError(415, f"send application/json or multipart/form-data, not {content_type or 'nothing'!r}")

    @app.post("/recommend", response_model=SearchResponse)
    async def recommend(body: RecommendRequest) -> SearchResponse:
        """Points like the ``positive`` ones and unlike the ``negative`` ones, in one space."""
        positive = [_point_id(p) for p in body.positive]
        negative = [_point_id(p) for p in body.negative]
        hits = await run(
            lambda: searcher().recommend(positive, negative, body.space, body.k, body.where, body.modality)
        )
        return SearchResponse(space=body.space, query="recommend", hits=_hits(hits))

    @app.get("/points/{point_id}", response_model=PointOut)
    async def point(point_id: str, with_vectors: bool = False) -> PointOut:
        pid = _point_id(point_id)
        found = await run(lambda: searcher().store.retrieve([pid], with_vectors=with_vectors))
        if not found:
            raise ApiError(404, f"no point {pid}")
        return PointOut(id=found[0].id, payload=found[0].payload, vectors=found[0].vectors if with_vectors else None)

    @app.get("/spaces", response_model=SpacesResponse)
    async def spaces() -> SpacesResponse:
        """The collection's named vectors: dimension, the model version fenced to it, and how many points."""

        def work() -> SpacesResponse:
            store = searcher().store
            specs = store.spaces()
            total = store.count()
            points_gauge.set(total)
            out = [
                SpaceOut(name=s.name, dim=s.dim, model=s.model, points=store.count_vectors(s.name))
                for s in specs.values()
            ]
            return SpacesResponse(collection=settings.qdrant.collection, points=total, spaces=out)

        result: SpacesResponse = await run(work)
        return result

    @app.get("/healthz", responses={503: {"model": Problem}})
    async def healthz() -> dict[str, Any]:
        """Liveness and readiness: the store answers (and, with ``serve --ingest``, the pipeline runs)."""
        problem = health() if health is not None else None
        if problem is not None:
            raise ApiError(503, problem, "ingest_stopped")
        total = await run(lambda: searcher().store.count())
        return {"status": "ok", "points": total, "backend": settings.qdrant.backend}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """The API's metrics; with ``serve --ingest``, the in-process pipeline's too (``embedstream_events``…)."""
        body = generate_latest(registry)
        if health is not None:
            from embedstream.pipelines.observability import INGEST

            body += generate_latest(INGEST.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _point_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ApiError(400, f"{value!r} is not a point id (a UUID, as search results give them)") from exc


def _default_space_of(searcher: Searcher, point_id: str) -> str:
    """A point's first space by the order of the spaces its modality is embedded in (text: minilm…)."""
    found = searcher.store.retrieve([point_id], with_vectors=True)
    if not found:
        raise NotFoundError(f"no point {point_id}")
    return next(iter(found[0].vectors))


def _hits(hits: list[Hit]) -> list[HitOut]:
    return [HitOut(id=h.id, score=h.score, payload=h.payload) for h in hits]


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    return f"{where}: {first.get('msg', 'invalid')}"
