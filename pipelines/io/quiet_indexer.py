"""Stream mode on the embedded store: build the HNSW index at quiet moments, so searches do not stay brute force.

qdrant-edge searches vectors by brute force until ``optimize`` builds their HNSW index (measured here on 40k
random 384-d vectors: 3.0 ms → 0.3 ms a search). A drain run optimizes when it ends; a stream never ends. And
the build cannot simply run beside the ingest: it holds the Python process while it runs (40k vectors: 15 s;
10k more later: ~6 s), so events arriving meanwhile wait. So the ``QuietIndexer`` waits for a quiet moment — no
point written for ``quiet_s`` — and builds only when at least ``min_vectors`` vectors await the index. An event
that arrives during a build waits for it (the build is bounded by what came since the last one); the log says
when each build ran and how long it took.
"""

from __future__ import annotations

import logging
import threading
import time

from embedstream.pipelines.stores import StoreFullError, VectorStore

log = logging.getLogger(__name__)


class QuietIndexer:
    """A thread beside the writer (module docstring). ``wrote`` marks activity; ``stop`` waits for a build in
    progress to end (the store must not close under it)."""

    def __init__(self, store: VectorStore, quiet_s: float, min_vectors: int) -> None:
        self._store = store
        self._quiet_s = quiet_s
        self._min_vectors = min_vectors
        self._last_write = time.monotonic()
        self._looked_at = float("-inf")  # when the store was last asked what awaits the index
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="quiet-indexer", daemon=True)
        self.builds = 0

    def start(self) -> None:
        self._thread.start()

    def wrote(self) -> None:
        self._last_write = time.monotonic()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(min(1.0, self._quiet_s / 2)):
            quiet_since = self._last_write
            if time.monotonic() - quiet_since < self._quiet_s or self._looked_at > quiet_since:
                continue  # busy, or nothing written since the last look
            self._looked_at = time.monotonic()
            try:
                self._build()
            except Exception:  # the index can wait; the ingest must not stop for it
                log.exception("building the store's index at a quiet moment failed; searches stay exact")

    def _build(self) -> None:
        awaiting = self._store.awaiting_index()
        if awaiting < self._min_vectors:
            return
        started = time.monotonic()
        try:
            self._store.optimize()
        except StoreFullError as exc:
            log.warning("not indexing the store now (searches stay exact, and slower): %s", exc)
            return
        self.builds += 1
        log.info("indexed %d vectors at a quiet moment in %.1f s", awaiting, time.monotonic() - started)
