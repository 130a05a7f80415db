"""``embedstream serve``: the HTTP API and page; with ``--ingest``, the streaming pipeline in the same process.

The embedded store (qdrant-edge) admits one process per path. So with the embedded store, the API and
ingestion must live in one process: ``serve --ingest`` shares one open store between them
(``pipelines.stores.shared``), runs ``run_ingest`` in stream mode on a background thread (Beam's in-process
runner executes the DoFns in this process) and the API on the main thread; stopping the server (Ctrl-C,
SIGTERM) stops the pipeline at its next checkpoint — it finishes the bundle and commits — before the store
closes. With a Qdrant server (``qdrant.backend = "server"``) API and ingestion can be separate processes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from embedstream.schemas.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, ingest: bool = False) -> None:
    import uvicorn

    from embedstream.pipelines.io.kafka_read import request_stop
    from embedstream.pipelines.stores.shared import close_shared_stores, share_embedded_stores
    from embedstream.workers.api import create_app

    worker: threading.Thread | None = None
    failure: list[BaseException] = []
    if ingest:
        share_embedded_stores()
        settings.pipeline.mode = "stream"
        worker = threading.Thread(target=_ingest, args=(settings, failure), name="ingest", daemon=True)
        worker.start()
    try:
        _graceful_server(uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning")).run()
    finally:
        if worker is not None:
            request_stop()
            worker.join(timeout=60)
            close_shared_stores()
    if failure:
        raise RuntimeError(f"ingestion stopped with an error: {failure[0]}") from failure[0]


def _graceful_server(config: Any) -> Any:
    """uvicorn's server, minus its re-raising of SIGINT/SIGTERM after shutdown: that would kill this process
    before the pipeline thread finishes its bundle and commits. The signal still stops the server."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    return GracefulServer(config)


def _ingest(settings: Settings, failure: list[BaseException]) -> None:
    from embedstream.pipelines.ingest import run_ingest

    try:
        run_ingest(settings)
    except BaseException as exc:  # reported by serve() when the server stops
        log.exception("ingestion failed; the API keeps serving what is stored")
        failure.append(exc)
