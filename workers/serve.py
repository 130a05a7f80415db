"""``embedstream serve``: the HTTP API and page; with ``--ingest``, the streaming pipeline in the same process.

The embedded store (qdrant-edge) admits one process per path. So with the embedded store, the API and
ingestion must live in one process: ``serve --ingest`` shares one open store between them
(``pipelines.stores.shared``), runs ``run_ingest`` in stream mode on a background thread (Beam's in-process
runner executes the DoFns in this process) and the API on the main thread. With a Qdrant server
(``qdrant.backend = "server"``) API and ingestion can be separate processes.

Lifecycle, and why:

* The stop event exists before the pipeline thread starts and is handed to ``run_ingest``: a stop that
  arrives while the pipeline is still starting is not lost.
* If the pipeline dies, the process does not go on as an API that silently ingests nothing: ``/healthz``
  answers 503 naming the error, the server shuts down, and ``serve`` raises (the CLI exits non-zero) so that
  a supervisor restarts the whole process.
* Stopping the server (Ctrl-C, SIGTERM) stops the pipeline at its next checkpoint — it finishes the bundle
  and commits — before the store closes. If it has not finished within ``stop_timeout_s`` the store is *not*
  closed under it: the process exits at once with status 3; the WAL keeps what was flushed and the records
  not yet committed are read again on the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from embedstream.schemas.errors import EmbedstreamError, UsageError
from embedstream.schemas.settings import Settings

if TYPE_CHECKING:
    from embedstream.pipelines.handles import Handle
    from embedstream.pipelines.stores import VectorStore

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 60.0
EXIT_STUCK = 3


class IngestStoppedError(EmbedstreamError):
    """The in-process pipeline died, or did not stop in time."""


class InsecureBindError(UsageError):
    """``serve`` was asked to listen beyond loopback with no API keys configured."""


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    ingest: bool = False,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    insecure: bool = False,
) -> None:
    import uvicorn

    from embedstream.workers.api.auth import loopback

    if not loopback(host) and not settings.api.keys and not insecure:
        raise InsecureBindError(
            f"refusing to serve on {host} without API keys: anyone who can reach it could read every point. "
            "Configure api.keys (embedstream api-key new) or pass --insecure"
        )
    if (settings.api.tls_certfile is None) != (settings.api.tls_keyfile is None):
        raise UsageError("api.tls_certfile and api.tls_keyfile go together")

    from embedstream.pipelines.handles import Handle
    from embedstream.pipelines.stores import open_store
    from embedstream.pipelines.stores.shared import SharedStore
    from embedstream.workers.api import create_app

    worker: threading.Thread | None = None
    failure: list[BaseException] = []
    stop = threading.Event()

    def health() -> str | None:
        if failure:
            return f"ingestion stopped with an error: {type(failure[0]).__name__}: {failure[0]}"
        if worker is not None and not worker.is_alive() and not stop.is_set():
            return "ingestion ended unexpectedly"
        return None

    # With --ingest, one embedded store for both the API and the pipeline: opened here, shared explicitly.
    shared = SharedStore(open_store(settings.qdrant)) if ingest else None
    server = _graceful_server(
        uvicorn.Config(
            create_app(settings, health=health, store=shared),
            host=host,
            port=port,
            log_level="warning",
            ssl_certfile=settings.api.tls_certfile,
            ssl_keyfile=settings.api.tls_keyfile,
            # uvicorn believes X-Forwarded-For from loopback by default: any local client could pick the address
            # its rate limit counts under. Only the proxies the operator names are believed.
            proxy_headers=bool(settings.api.forwarded_allow_ips),
            forwarded_allow_ips=",".join(settings.api.forwarded_allow_ips) or None,
        )
    )
    handle = Handle.register(shared, "store") if shared is not None else None
    if handle is not None:
        stream = settings.replace(pipeline={"mode": "stream"})
        worker = threading.Thread(
            target=_ingest, args=(stream, handle, stop, failure, server), name="ingest", daemon=True
        )
        worker.start()
    try:
        server.run()
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=stop_timeout_s)
            if worker.is_alive():
                # Closing the store under a running pipeline would lose its bundle; a normal exit would wait
                # for its threads forever (a hung decode). Leave now: the WAL keeps what was flushed, and what
                # was not committed is read again on the next start.
                print(
                    f"embedstream: error: the pipeline did not stop within {stop_timeout_s:.0f}s; exiting without "
                    "closing the store under it (what was not committed is read again on the next start)",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_STUCK)
        if handle is not None and shared is not None:
            handle.release()
            shared.close_owned()
    if failure:
        raise IngestStoppedError(f"ingestion stopped with an error: {failure[0]}") from failure[0]


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


def _ingest(
    settings: Settings,
    store: Handle[VectorStore],
    stop: threading.Event,
    failure: list[BaseException],
    server: Any,
) -> None:
    from embedstream.pipelines.ingest import run_ingest

    try:
        run_ingest(settings, stop=stop, store=store)
    except BaseException as exc:
        log.exception("ingestion failed; shutting the server down")
        failure.append(exc)
    finally:
        if not stop.is_set():  # the pipeline ended on its own: the process must not go on without it
            if not failure:
                failure.append(IngestStoppedError("the pipeline ended unexpectedly"))
            server.should_exit = True
