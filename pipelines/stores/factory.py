"""Open the store the settings name."""

from __future__ import annotations

import time
from pathlib import Path

from embedstream.pipelines.stores.base import StoreLockedError, VectorStore
from embedstream.pipelines.stores.edge import EdgeStore
from embedstream.pipelines.stores.server import ServerStore
from embedstream.pipelines.stores.shared import shared, sharing
from embedstream.schemas.settings import QdrantSettings


def open_store(settings: QdrantSettings) -> VectorStore:
    """The embedded qdrant-edge store by default; qdrant-client for ``server`` and ``local`` backends.
    With ``share_embedded_stores()`` on, an embedded path is opened once per process and shared."""
    if settings.backend == "server":
        return ServerStore(settings)
    if sharing():
        key = f"{settings.backend}:{Path(settings.path).resolve()}/{settings.collection}"
        return shared(key, lambda: _open(settings))
    return _open(settings)


def _open(settings: QdrantSettings) -> VectorStore:
    if settings.backend == "edge":
        return EdgeStore(settings.path, settings.collection)
    return ServerStore(settings)


def wait_until_released(settings: QdrantSettings, timeout_s: float = 30.0) -> None:
    """Return once no worker of a finished pipeline holds the embedded store any more.

    Portable runners tear their workers (and so the sink's store) down asynchronously after the job is done;
    whoever opens the path next — the demo's search, a test — must not race them.
    """
    if settings.backend == "server" or sharing():  # shared: this process is the only holder, by design
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            store = open_store(settings)  # qdrant-client local mode locks here
            try:
                if settings.backend == "edge":
                    store.count()  # qdrant-edge locks when the shard opens
            finally:
                store.close()
            return
        except StoreLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        except FileNotFoundError:
            return  # nothing was ever written
