"""The search API (FastAPI) over the configured store, and the web page that uses it.

Operations (``routes/``): ``POST /search`` (JSON: a text or a point id), ``POST /search/file`` (multipart: a
picture or sound file), ``POST /recommend``, ``GET /points/{id}``, ``GET /spaces``, ``GET /healthz``,
``GET /metrics`` (Prometheus); the OpenAPI schema, generated from the routes, at ``/openapi.json`` (docs at
``/docs``) and the page at ``/``.

Access (``auth.py``): with ``api.keys`` configured every operation but ``/healthz`` and the page's files needs
a key (401 without one, 403 for a key of too small a scope, 429 over ``api.rate_per_s``), all as ``Problem``
bodies. The gate (``middleware.py``) decides before a body is read; each router also declares the scope it needs
(``deps.requires``), which puts the security schemes in the schema. CORS is off unless ``api.cors_origins``
lists origins.

Errors are part of the contract (``errors.py``): 400 for a query that cannot run (a space the query cannot
search), 404 for an unknown point, 413 for an upload over the event size limit, 415 for a body of the wrong
media type, 422 for an invalid body or file (with the dead-letter reason code ingestion would give it), 503
when not servable now. Only a fault of ours is a 500.

Threads: FastAPI runs the blocking work in its thread pool. ONNX Runtime sessions are safe to share; store
calls are serialized (``SharedStore``), which also makes the API safe beside an in-process pipeline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from embedstream.pipelines.stores import open_store
from embedstream.pipelines.stores.shared import SharedStore
from embedstream.schemas.settings import Settings
from embedstream.workers.api.auth import Gate
from embedstream.workers.api.errors import install_handlers
from embedstream.workers.api.middleware import BodyLimitMiddleware, GateMiddleware, MetricsMiddleware
from embedstream.workers.api.models import Problem
from embedstream.workers.api.routes import classify, ops, points, search, spaces
from embedstream.workers.api.routes import store as store_routes
from embedstream.workers.search import Searcher
from embedstream.workers.spaces import BackfillJobs

PAGE = Path(__file__).parent / "page"
MULTIPART_ALLOWANCE = 64 * 1024  # form fields and multipart framing beside an uploaded file


@dataclass
class ApiMetrics:
    """The API's own Prometheus registry: requests by endpoint and status, latency, points in the collection."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "embedstream_http_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "embedstream_http_request_seconds",
            "request latency",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.points = Gauge("embedstream_points", "points in the collection", registry=self.registry)
        self.query_batch = Histogram(
            "embedstream_query_batch_size",
            "concurrent text queries encoded and searched together (api.batch_queries)",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32),
        )


def create_app(
    settings: Settings, health: Callable[[], str | None] | None = None, store: SharedStore | None = None
) -> FastAPI:
    """The app for ``settings``; the store and encoders open at start-up and close at shutdown. ``store``: one
    the caller shares (``serve --ingest``) and closes itself. ``health`` (``serve --ingest``: the in-process
    pipeline) returns a problem that makes ``/healthz`` answer 503."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Requests run on a thread pool, so store calls go through SharedStore's lock either way.
        shared = store if store is not None else SharedStore(open_store(settings.qdrant))
        app.state.searcher = Searcher(settings, store=shared, on_batch=metrics.query_batch.observe)
        app.state.backfills = BackfillJobs(shared, settings)
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
        responses={
            400: {"model": Problem},
            401: {"model": Problem},
            403: {"model": Problem},
            404: {"model": Problem},
            422: {"model": Problem},
            429: {"model": Problem},
            503: {"model": Problem},
        },
    )
    app.state.settings = settings
    app.state.health = health
    app.state.gate = gate = Gate(settings.api)
    app.state.metrics = metrics = ApiMetrics()

    # An upload is at most one event (pipeline.max_event_bytes) plus its multipart framing and form fields.
    app.add_middleware(BodyLimitMiddleware, limit=settings.pipeline.max_event_bytes + MULTIPART_ALLOWANCE)
    app.add_middleware(GateMiddleware, gate=gate)  # outside the body limit: a denied request is never read
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "api-key", "content-type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    install_handlers(app)
    for router in (
        search.router,
        classify.router,
        points.router,
        spaces.router,
        spaces.admin,
        store_routes.admin,
        ops.router,
    ):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE / "index.html")

    app.mount("/static", StaticFiles(directory=PAGE), name="static")
    return app
