"""Concurrent queries answered together: one encoder call and one store call for all that wait at once.

Encoding a text query alone costs ONNX Runtime a whole model call for one short sequence, so under load the CPU
goes to per-call overhead. A ``QueryBatcher`` lets the requests that arrive while a batch is being answered wait
for the next one, and answers them in one ``run`` call.

No timer: the first request of an idle batcher runs at once (one client sees no added latency), and the batch
that follows holds whatever arrived meanwhile — the busier the server, the larger the batches (at most
``max_batch``). ``run`` gives one outcome per request, an answer or the exception that request failed with (a
space it may not search fails only itself); if the whole call fails, each of its requests is run alone, so one
bad request still fails only itself.

Batches are run by the batcher's own threads, at most ``runners`` at once. Requests wait without a thread:
``await answer_async(item)`` on an event loop (the API: no thread hop per request, and one loop callback wakes
a whole batch), or ``answer(item)`` from any thread. A second runner encodes one batch while another is in the
model or the store; on two cores it measured +5-10 % requests/s at 4 clients but no more at 16, with a worse p99
and a slower lone query (``bench/reports/serve_load.md``), so one is the API's default (``api.query_runners``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[T, R]):
    """One request: its item, its outcome once answered, and how its waiter is woken (an event for a thread, a
    future on its loop for a coroutine)."""

    item: T
    woken: threading.Event | None = None
    future: asyncio.Future[R] | None = None
    finished: bool = False
    result: R | None = None
    error: BaseException | None = None


class QueryBatcher(Generic[T, R]):
    """``answer(item)`` from any thread or ``await answer_async(item)`` on a loop; ``run(items)`` answers a batch,
    one outcome per item, in order (an exception instance fails that item alone)."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R | Exception]],
        max_batch: int = 32,
        runners: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """``runners``: batches answered at once, each on its own thread. ``on_batch``: told each batch's size
        (the API's ``embedstream_query_batch_size`` histogram, tests)."""
        if runners < 1 or max_batch < 1:
            raise ValueError(f"runners ({runners}) and max_batch ({max_batch}) must be at least 1")
        self._run = run
        self._max_batch = max_batch
        self._runners = runners
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._pending: list[_Waiting[T, R]] = []
        self._active = 0  # runners answering batches now
        self._pool = ThreadPoolExecutor(runners, thread_name_prefix="query-batch")
        self.split = 0  # batches whose run failed as a whole and were answered one request at a time

    def answer(self, item: T) -> R:
        """``item``'s answer, the calling thread waiting for its batch."""
        me: _Waiting[T, R] = _Waiting(item, woken=threading.Event())
        self._enqueue(me)
        me.woken.wait()  # type: ignore[union-attr]  # set above
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]  # set whenever error is not

    async def answer_async(self, item: T) -> R:
        """``item``'s answer, awaited on the running loop (no thread waits for it)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._enqueue(_Waiting(item, future=future))
        return await future

    def close(self) -> None:
        """Let the runner threads end once the batches in hand are answered (no new request may come)."""
        self._pool.shutdown(wait=False)

    def _enqueue(self, me: _Waiting[T, R]) -> None:
        with self._lock:
            self._pending.append(me)
            start = self._active < self._runners
            if start:
                self._active += 1
        if start:
            self._pool.submit(self._drain)

    def _drain(self) -> None:
        """A runner: batches of what waits, oldest first, until nothing waits."""
        while True:
            with self._lock:
                if not self._pending:
                    self._active -= 1
                    return
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                self._answer(batch)
            except BaseException as exc:  # (on_batch…) no waiter is left waiting for ever
                for waiting in batch:
                    if not waiting.finished:
                        waiting.error, waiting.finished = exc, True
            _wake(batch)

    def _answer(self, batch: list[_Waiting[T, R]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            outcomes = list(self._run([w.item for w in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(outcomes)} answers")
        except Exception as exc:
            if len(batch) > 1:
                self.split += 1
                log.warning(
                    "a batch of %d queries failed (%s: %s); answering each alone", len(batch), type(exc).__name__, exc
                )
                for waiting in batch:  # each alone: one bad request fails only itself
                    self._answer([waiting])
                return
            batch[0].error, batch[0].finished = exc, True
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                waiting.error = outcome
            else:
                waiting.result = outcome
            waiting.finished = True


def _wake(batch: list[_Waiting[T, R]]) -> None:
    """Each waiter of an answered batch: threads by their event, coroutines by one callback per loop."""
    loops: dict[asyncio.AbstractEventLoop, list[_Waiting[T, R]]] = {}
    for waiting in batch:
        if waiting.woken is not None:
            waiting.woken.set()
        elif waiting.future is not None:
            loops.setdefault(waiting.future.get_loop(), []).append(waiting)
    for loop, waiters in loops.items():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody awaits these any more
            loop.call_soon_threadsafe(_settle, waiters)


def _settle(waiters: list[_Waiting[T, R]]) -> None:
    for waiting in waiters:
        future = waiting.future
        if future is None or future.done():  # a cancelled request (its client went away)
            continue
        if waiting.error is not None:
            future.set_exception(waiting.error)
        else:
            future.set_result(waiting.result)  # type: ignore[arg-type]  # set whenever error is not
