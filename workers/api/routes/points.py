"""Points: one stored point by id."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from embedstream.workers.api.deps import SearcherDep, requires
from embedstream.workers.api.errors import ApiError, blocking
from embedstream.workers.api.models import PointOut

router = APIRouter(tags=["points"], dependencies=[Depends(requires("read"))])


@router.get("/points/{point_id}", response_model=PointOut)
async def point(point_id: uuid.UUID, searcher: SearcherDep, with_vectors: bool = False) -> PointOut:
    """One point: its payload (the text itself, never stripped) and, when asked, its vectors."""
    pid = str(point_id)
    found = await blocking(lambda: searcher.store.retrieve([pid], with_vectors=with_vectors))
    if not found:
        raise ApiError(404, f"no point {pid}")
    return PointOut(id=point_id, payload=found[0].payload, vectors=found[0].vectors if with_vectors else None)
