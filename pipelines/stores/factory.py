"""Open the store the settings name."""

from __future__ import annotations

import time

from embedstream.pipelines.stores.base import NoCollectionError, StoreLockedError, VectorStore
from embedstream.pipelines.stores.edge import EdgeStore
from embedstream.schemas.settings import QdrantSettings


def open_store(settings: QdrantSettings) -> VectorStore:
    """The embedded qdrant-edge store by default; qdrant-client for ``server`` and ``local`` backends. Each
    call opens its own; a process that must use one embedded path from two places shares a ``SharedStore``."""
    if settings.backend == "edge":
        options, free = settings.collection_options, settings.min_free_mb * 1_000_000
        return EdgeStore(settings.path, settings.collection, free, options, settings.hnsw_ef)
    # Imported here: qdrant-client takes ~1.4 s to import, which a run on the embedded store should not pay.
    from embedstream.pipelines.stores.server import ServerStore

    return ServerStore(settings)


def wait_until_released(settings: QdrantSettings, timeout_s: float = 30.0) -> None:
    """Return once no worker of a finished pipeline holds the embedded store any more.

    Portable runners tear their workers (and so the sink's store) down asynchronously after the job is done;
    whoever opens the path next — the demo's search, a test — must not race them.
    """
    if settings.backend == "server":
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
        except NoCollectionError:
            return  # nothing was ever written
