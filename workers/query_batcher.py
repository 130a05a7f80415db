"""Concurrent queries answered together: one encoder call and one store call for all that wait at once.

``serve`` runs each request on a thread; encoding a text query alone costs ONNX Runtime a whole model call
for one short sequence, so under load the CPU goes to per-call overhead. A ``QueryBatcher`` lets the requests
that arrive while a batch is being answered wait for the next one, and answers them in one ``run`` call.

No timer: the first request of an idle batcher runs at once (one client sees no added latency), and the batch
that follows holds whatever arrived meanwhile — the busier the server, the larger the batches (at most
``max_batch``). If a batch fails, each of its requests is run alone, so one bad request fails only itself.

Each waiting thread has its own wake-up, set once: when its answer is in, or when it is handed the lead. (One
condition notified to all made every waiting request thread contend for the GIL after every batch.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    woken: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    leads: bool = False
    result: R | None = None
    error: BaseException | None = None


class QueryBatcher(Generic[T, R]):
    """``answer(item)`` from any thread; ``run(items)`` answers a batch, one result per item, in order.

    One waiting thread at a time leads: it answers batches until its own request is answered, then hands the
    lead to the oldest request still waiting (so no thread answers others' requests for ever)."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        max_batch: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """``on_batch``: told each batch's size (the API's ``embedstream_query_batch_size`` histogram, tests)."""
        self._run = run
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._pending: list[_Waiting[T, R]] = []
        self._running = False
        self.split = 0  # batches that failed and were answered one request at a time

    def answer(self, item: T) -> R:
        me: _Waiting[T, R] = _Waiting(item)
        with self._lock:
            self._pending.append(me)
            if not self._running:
                self._running = me.leads = True
        if not me.leads:
            me.woken.wait()  # answered, or handed the lead
        if not me.finished:
            self._lead(me)
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]  # set whenever error is not

    def _lead(self, me: _Waiting[T, R]) -> None:
        while not me.finished:  # me is in the pending list: a batch answers it
            with self._lock:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            self._answer(batch)
            for waiting in batch:
                if waiting is not me:
                    waiting.woken.set()
        with self._lock:
            if self._pending:
                successor = self._pending[0]
                successor.leads = True
                successor.woken.set()
            else:
                self._running = False

    def _answer(self, batch: list[_Waiting[T, R]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            results = list(self._run([w.item for w in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(results)} answers")
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
        for waiting, result in zip(batch, results, strict=True):
            waiting.result, waiting.finished = result, True
