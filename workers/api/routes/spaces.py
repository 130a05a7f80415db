"""Spaces: what the collection holds (read), and moving a space to another model with no downtime (admin).

``POST /spaces/{space}/migrate`` adds the new model's vectors and backfills them on a thread of this server,
which shares its open store with the searches (and, under ``serve --ingest``, the ingest): the embedded store
migrates while it is searched and written. The other steps answer when done. A step on a space whose backfill
still runs answers 409 (``ConflictError``); ``GET /spaces`` shows the backfill's progress.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from embedstream.onnx_models.registry import ModelNotBuiltError
from embedstream.pipelines.spaces import migration
from embedstream.pipelines.spaces.reembed import RemakeFrom
from embedstream.pipelines.stores import VectorStore
from embedstream.schemas.errors import NotFoundError
from embedstream.workers.api.deps import SearcherDep, SettingsDep, requires
from embedstream.workers.api.errors import blocking
from embedstream.workers.api.models import BackfillOut, MigrateRequest, Problem, SpaceOut, SpacesResponse
from embedstream.workers.spaces import Backfill, BackfillJobs

router = APIRouter(tags=["spaces"], dependencies=[Depends(requires("read"))])
admin = APIRouter(tags=["spaces"], dependencies=[Depends(requires("admin"))])


def _jobs(request: Request) -> BackfillJobs:
    jobs: BackfillJobs = request.app.state.backfills
    return jobs


def _backfill(job: Backfill | None) -> BackfillOut | None:
    return None if job is None else BackfillOut(to=job.to, filled=job.filled, running=job.running, error=job.error)


def _space_out(state: migration.SpaceState, jobs: BackfillJobs) -> SpaceOut:
    return SpaceOut(
        name=state.name,
        dim=state.dim,
        model=state.model,
        points=state.points,
        state=state.state,
        searched_model=state.searched_model,
        to_model=state.to_model,
        backfilled=state.backfilled,
        backfill=_backfill(jobs.job(state.name)),
    )


@router.get("/spaces", response_model=SpacesResponse)
async def spaces(request: Request, searcher: SearcherDep, settings: SettingsDep) -> SpacesResponse:
    """The collection's spaces: dimension, the model version fenced to each, how many points, and each
    migration's state and progress."""
    jobs = _jobs(request)

    def work() -> SpacesResponse:
        store = searcher.store
        total = store.count()
        request.app.state.metrics.points.set(total)
        out = [_space_out(state, jobs) for state in migration.space_states(store)]
        return SpacesResponse(collection=settings.qdrant.collection, points=total, spaces=out)

    result: SpacesResponse = await blocking(work)
    return result


STEP_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such space (or, for migrate, the model is not built here)"},
    409: {"model": Problem, "description": "the space's state does not allow the step now (the detail says why)"},
}


@admin.post("/spaces/{space}/migrate", response_model=BackfillOut, status_code=202, responses=STEP_ANSWERS)
async def migrate(space: str, body: MigrateRequest, request: Request) -> BackfillOut:
    """Add ``to``'s vectors to the space and backfill them on this server; ingests write both meanwhile.
    Again on a space migrating to the same model: resumes an interrupted backfill."""
    jobs = _jobs(request)

    def begin() -> Backfill:
        try:
            return jobs.start(space, body.to)
        except ModelNotBuiltError as exc:  # the model the caller named: its mistake, not the server's state
            raise NotFoundError(str(exc)) from exc

    job = await blocking(begin)
    out = _backfill(job)
    assert out is not None
    return out


@admin.post("/spaces/{space}/{step}", response_model=SpaceOut, responses=STEP_ANSWERS)
async def step(space: str, step: migration.Step, request: Request) -> SpaceOut:
    """``switch``: searches use the new model's vectors (after a last backfill pass); ``rollback``: the old ones
    again; ``drop-old``: the space keeps the new model's vectors only; ``cancel``: abandon a migration before its
    switch (the new vectors are removed)."""
    jobs = _jobs(request)
    searcher = request.app.state.searcher
    store: VectorStore = searcher.store
    settings = request.app.state.settings

    def work() -> SpaceOut:
        jobs.check_idle(space)
        spec = migration.take_step(store, RemakeFrom.of(settings), space, step)
        state = next(s for s in migration.space_states(store) if s.name == spec.name)
        return _space_out(state, jobs)

    result: SpaceOut = await blocking(work)
    return result
