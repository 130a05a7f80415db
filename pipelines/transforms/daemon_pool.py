"""A pool of daemon threads for fetching and decoding media: ``ThreadPoolExecutor``'s ``submit`` and ``shutdown``,
except that a thread stuck in a call never keeps the process from exiting.

``ThreadPoolExecutor`` joins its threads when the interpreter exits, so one read that never returns (a server that
drips a byte a second, a FIFO, a hung network mount) kept a finished drain from ever ending. The fetches
themselves are bounded (``pipelines.media``); this is the second line: a call the embedding step has given up on
(``media.decode_timeout_s``) is abandoned on a daemon thread, which dies with the process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = None


class DaemonPool:
    """``threads`` daemon workers taking calls in order."""

    def __init__(self, threads: int, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = threads
        self._closed = False
        for i in range(threads):
            threading.Thread(target=self._serve, name=f"{name}_{i}", daemon=True).start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError("submit after shutdown")
        future: Future[T] = Future()
        self._work.put((future, fn, args))
        return future

    def shutdown(self, wait: bool = False, cancel_futures: bool = False) -> None:
        """Idle workers end; a worker in a call ends after it (or never, abandoned: it is a daemon).
        ``cancel_futures``: calls not yet started are cancelled. ``wait`` is not supported (never needed)."""
        if wait:
            raise ValueError("DaemonPool.shutdown does not wait: its calls may never return")
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in range(self._threads):
            self._work.put(_STOP)

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # the caller gets it from the future, as from an executor
                future.set_exception(exc)
