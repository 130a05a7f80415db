"""The store as a whole (admin): a snapshot taken while the server runs — under ``serve --ingest`` while it
ingests: the pipeline waits for the copy, then carries on (``pipelines.stores.snapshot``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request

from embedstream.pipelines.stores import snapshot
from embedstream.workers.api.deps import SettingsDep, requires
from embedstream.workers.api.errors import blocking
from embedstream.workers.api.models import SnapshotOut, SnapshotRequest

admin = APIRouter(tags=["store"], dependencies=[Depends(requires("admin"))])


@admin.post("/store/snapshot", response_model=SnapshotOut)
async def take_snapshot(body: SnapshotRequest, request: Request, settings: SettingsDep) -> SnapshotOut:
    """Snapshot the store into ``<qdrant.snapshot_dir>/<name>.tar`` (restore it with ``embedstream store
    restore``); answers when the file is complete."""
    target = Path(settings.qdrant.snapshot_dir) / f"{body.name}.tar"
    store = request.app.state.searcher.store
    info = await blocking(lambda: snapshot.take(store, settings, target))
    return SnapshotOut(
        path=str(target), collection=info.collection, points=info.points, models=info.models, taken_at=info.taken_at
    )
