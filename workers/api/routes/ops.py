"""Operations: health (open to all, for probes) and Prometheus metrics (admin unless ``api.metrics_public``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from embedstream.workers.api.deps import SearcherDep, SettingsDep
from embedstream.workers.api.errors import ApiError, blocking
from embedstream.workers.api.models import Health, Problem

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Problem}})
async def healthz(request: Request, searcher: SearcherDep, settings: SettingsDep) -> Health:
    """Liveness and readiness: the store answers (and, with ``serve --ingest``, the pipeline runs)."""
    health: Callable[[], str | None] | None = request.app.state.health
    problem = health() if health is not None else None
    if problem is not None:
        raise ApiError(503, problem, "ingest_stopped")
    total = await blocking(lambda: searcher.store.count())
    return Health(status="ok", points=total, backend=settings.qdrant.backend)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """The API's metrics; with ``serve --ingest``, the in-process pipeline's too (``embedstream_events``…)."""
    state: Any = request.app.state
    body = generate_latest(state.metrics.registry)
    if state.health is not None:
        from embedstream.pipelines.observability import INGEST

        body += generate_latest(INGEST.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
