"""Operations: health (open to all, for probes) and Prometheus metrics (admin unless ``api.metrics_public``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from embedstream.workers.api.deps import SearcherDep, SettingsDep
from embedstream.workers.api.errors import ApiError, blocking
from embedstream.workers.api.models import Health, Problem

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Problem}})
async def healthz(request: Request, searcher: SearcherDep, settings: SettingsDep) -> Health:
    """Liveness and readiness: the store answers (and, with ``serve --ingest``, the pipeline runs). Open to all,
    so its answers are fixed words: the cause (which may name a path or a host) goes to the server's log only."""
    health: Callable[[], str | None] | None = request.app.state.health
    problem = health() if health is not None else None
    if problem is not None:
        log.error("health check: %s", problem)
        raise ApiError(503, "the in-process ingest has stopped (the server's log says why)", "ingest_stopped")
    try:
        total = await blocking(lambda: searcher.store.count())
    except Exception as exc:
        log.error("health check: the store does not answer: %s", exc)
        raise ApiError(503, "the store does not answer (the server's log says why)", "store_unavailable") from None
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
