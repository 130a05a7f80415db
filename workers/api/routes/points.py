"""Points and spaces: one stored point by id, and the collection's named vectors."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from embedstream.workers.api.deps import SearcherDep, SettingsDep, requires
from embedstream.workers.api.errors import ApiError, blocking
from embedstream.workers.api.models import PointOut, SpaceOut, SpacesResponse

router = APIRouter(tags=["points"], dependencies=[Depends(requires("read"))])


@router.get("/points/{point_id}", response_model=PointOut)
async def point(point_id: uuid.UUID, searcher: SearcherDep, with_vectors: bool = False) -> PointOut:
    """One point: its payload (the text itself, never stripped) and, when asked, its vectors."""
    pid = str(point_id)
    found = await blocking(lambda: searcher.store.retrieve([pid], with_vectors=with_vectors))
    if not found:
        raise ApiError(404, f"no point {pid}")
    return PointOut(id=point_id, payload=found[0].payload, vectors=found[0].vectors if with_vectors else None)


@router.get("/spaces", response_model=SpacesResponse)
async def spaces(request: Request, searcher: SearcherDep, settings: SettingsDep) -> SpacesResponse:
    """The collection's named vectors: dimension, the model version fenced to it, and how many points."""

    def work() -> SpacesResponse:
        store = searcher.store
        specs = store.spaces()
        total = store.count()
        request.app.state.metrics.points.set(total)
        out = [
            SpaceOut(name=s.name, dim=s.dim, model=s.model, points=store.count_vectors(s.name)) for s in specs.values()
        ]
        return SpacesResponse(collection=settings.qdrant.collection, points=total, spaces=out)

    result: SpacesResponse = await blocking(work)
    return result
