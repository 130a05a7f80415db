"""Open the store the settings name."""

from __future__ import annotations

from pipelines.stores.base import VectorStore
from pipelines.stores.edge import EdgeStore
from pipelines.stores.server import ServerStore
from schemas.settings import QdrantSettings


def open_store(settings: QdrantSettings) -> VectorStore:
    """The embedded qdrant-edge store by default; qdrant-client for ``server`` and ``local`` backends."""
    if settings.backend == "edge":
        return EdgeStore(settings.path, settings.collection)
    return ServerStore(settings)
