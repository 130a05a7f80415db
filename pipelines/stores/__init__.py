"""Qdrant behind one small interface: the embedded engine (qdrant-edge) or a server (qdrant-client)."""

from embedstream.pipelines.stores.base import (
    Hit,
    NoCollectionError,
    SearchRequest,
    Shadow,
    SpaceSpec,
    StoredPoint,
    StoreFullError,
    StoreLockedError,
    StoreSchemaError,
    StoreWriteError,
    VectorStore,
)
from embedstream.pipelines.stores.factory import open_store, wait_until_released

__all__ = [
    "Hit",
    "NoCollectionError",
    "SearchRequest",
    "Shadow",
    "SpaceSpec",
    "StoreFullError",
    "StoreLockedError",
    "StoreSchemaError",
    "StoreWriteError",
    "StoredPoint",
    "VectorStore",
    "open_store",
    "wait_until_released",
]
