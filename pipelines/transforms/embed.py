"""The one embedding step: hold a window of events, prepare them, batch by cost, encode, gate, emit in order.

``Embed`` is one DoFn for every modality; what differs per modality lives in a ``ModalityAdapter``
(``transforms.adapters``): which events it takes, how an event becomes a prepared model input (tokens,
pixels, mel partials) and what that costs, which spaces a point gets. The chain is
``Embed(text) → Embed(image) → Embed(audio) → Deliver``: each takes its adapter's events and passes
everything else (other events, points, dead letters) straight through, so the ingest stays one fused stage
with no Flatten (docs/architecture.md).

The loop, the same for all:

1. **Hold** arriving events in a queue. An adapter that prepares in a pool (media: fetch + decode +
   preprocess, where Pillow, libsndfile and soxr release the GIL) has each event's work submitted the moment
   it arrives, and the oldest ``window`` events are encoded only once twice that many are queued — ONNX Runtime
   encodes one window while the pool prepares the next. An adapter that prepares inline (text) holds
   ``window`` events (``sort_window``) and prepares them in one call (the tokenizer's batch API), so sorting
   by length sees the whole window.
2. **Plan** batches by cost (``batching.plan_batches``: padded tokens, partials, one per picture) within
   ``max_batch_cost`` and ``max_batch_size``.
3. **Encode** each batch; a batch the encoder rejects is retried one event at a time (``batch_or_each``), so
   one poisonous event is one dead letter.
4. **Gate** every vector (``quality.vector_problem``) and build the point (``points.point_or_dead``).
5. **Emit** outcomes in arrival order (per partition: Kafka order), so a later write of the same id lands
   last. Encoding stays on the bundle thread: a background encoder thread was measured no faster on 2 cores,
   where it steals CPU from ONNX Runtime's own threads.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import numpy as np

from embedstream.onnx_models.batching import plan_batches
from embedstream.pipelines.events import ParsedEvent
from embedstream.pipelines.media.errors import MediaError
from embedstream.pipelines.observability import INGEST
from embedstream.pipelines.transforms.daemon_pool import DaemonPool
from embedstream.pipelines.transforms.isolation import batch_or_each
from embedstream.pipelines.transforms.outputs import dead, windowed
from embedstream.pipelines.transforms.points import point_or_dead
from embedstream.pipelines.transforms.quality import vector_problem
from embedstream.schemas.dead_letter import Reason
from embedstream.schemas.envelope import Modality
from embedstream.schemas.point import SparseVector


@dataclass(frozen=True)
class Prepared:
    """One event's model input (``item``), what it costs the encoder, facts for its payload (a picture's size,
    a sound's length: under ``media``) and ``fields`` (top-level payload: a truncated text says so).

    ``parts``: an event that is several model inputs (a long text cut into chunks, each part's ``facts``
    holding its ``chunk``); ``item`` is unused then, and the adapter's ``document`` makes its points."""

    item: Any
    cost: int
    facts: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    parts: tuple[Prepared, ...] = ()

    def units(self) -> tuple[Prepared, ...]:
        """What the encoder runs for this event: its parts, or itself."""
        return self.parts or (self,)


@dataclass(frozen=True)
class Space:
    """One vector a point gets: the space it lands in, the model ref its payload records, its dimension."""

    name: str
    ref: str
    dim: int


class ModalityAdapter(ABC):
    """What ``Embed`` needs to know about one modality. Built from settings on the launcher (picklable: it
    holds settings only until ``load`` runs on the worker)."""

    modalities: frozenset[Modality] = frozenset()
    stage = "embed"
    preparer = "tokenizer"  # what prepares, as error messages name it
    failed_reason = Reason.ENCODE_FAILED  # an unexpected error while preparing one event
    failed_stage = "encode"

    #: events encoded together; 0 prepare threads = prepare inline, the whole window in one call
    window: int
    prepare_threads: int = 0
    prepare_timeout_s: float = 60.0
    max_batch_cost: int
    max_batch_size: int

    @abstractmethod
    def load(self) -> list[Space]:
        """Load the encoders (on the worker); say which spaces every point of this modality gets."""

    @abstractmethod
    def prepare(self, events: list[ParsedEvent]) -> list[Prepared]:
        """Model inputs for ``events``, one per event in order. Raises ``MediaError`` for an event that cannot be
        prepared (its reason becomes the dead letter's); any other exception on a window is retried event by
        event."""

    @abstractmethod
    def encode(self, items: list[Any]) -> dict[str, np.ndarray]:
        """Every space's ``[len(items), dim]`` vectors for one batch of prepared items."""

    def sparse(self, text: str) -> dict[str, SparseVector]:
        """Sparse vectors of a text (text: ``bm25``); none by default."""
        return {}

    def document(
        self, event: ParsedEvent, prepared: Prepared, rows: list[dict[str, np.ndarray]], refs: dict[str, str], at: str
    ) -> list[Any]:
        """The points of an event prepared in ``parts`` (one vector row per part); only text makes parts."""
        raise NotImplementedError(f"{self.stage} events are not prepared in parts")


Queued = tuple[ParsedEvent, "Future[Prepared] | None"]
Outcome = Any  # a PointRecord or a DeadLetter


class Embed(beam.DoFn):
    """``ParsedEvent`` of the adapter's modalities → ``PointRecord``, or a ``DeadLetter`` naming the stage that
    failed it (decode, encode, quality, payload); any other element passes through unchanged."""

    def __init__(self, adapter: ModalityAdapter) -> None:
        self.adapter = adapter

    def setup(self) -> None:
        self._spaces = self.adapter.load()
        self._refs = {space.name: space.ref for space in self._spaces}
        self._pool = self._new_pool()

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def start_bundle(self) -> None:
        self._queue: deque[Queued] = deque()

    def process(self, element: Any) -> Iterator[Any]:
        adapter = self.adapter
        if not isinstance(element, ParsedEvent) or element.envelope.modality not in adapter.modalities:
            yield element
            return
        future = self._pool.submit(self._prepare_one, element) if self._pool is not None else None
        self._queue.append((element, future))
        if len(self._queue) >= adapter.window * (2 if self._pool is not None else 1):
            yield from self._flush(adapter.window)

    def finish_bundle(self) -> Iterator[Any]:
        while self._queue:
            yield from windowed(self._flush(self.adapter.window))

    # --- the loop ---
    def _flush(self, count: int) -> Iterator[Outcome]:
        taken = [self._queue.popleft() for _ in range(min(count, len(self._queue)))]
        outcomes: list[list[Outcome]] = [[] for _ in taken]
        prepared = self._prepared(taken, outcomes)
        # An event is one unit, or several (a long text's chunks): batches are planned over units.
        units = [(i, k, unit) for i, p in enumerate(prepared) if p is not None for k, unit in enumerate(p.units())]
        rows: dict[int, list[dict[str, np.ndarray]]] = {
            i: [{}] * len(p.units()) for i, p in enumerate(prepared) if p is not None
        }  # one row a unit
        failed_events: dict[int, str] = {}
        adapter = self.adapter
        plan = plan_batches([unit.cost for _, _, unit in units], adapter.max_batch_cost, adapter.max_batch_size)
        for planned in plan:
            batch = [units[j] for j in planned]
            got, failed = batch_or_each(self._encode, [unit.item for _, _, unit in batch], f"{adapter.stage} encoder")
            for j, (i, k, _) in enumerate(batch):
                row = got[j]
                if row is None:
                    failed_events.setdefault(i, failed.get(j, "encoder returned nothing"))
                else:
                    rows[i][k] = row
        ingested_at = datetime.now(UTC).isoformat()
        for i, p in enumerate(prepared):
            if p is None:
                continue
            event = taken[i][0]
            if i in failed_events:
                outcomes[i] = [dead(event, Reason.ENCODE_FAILED, failed_events[i], "encode")]
            else:
                outcomes[i] = self._points(event, rows[i], p, ingested_at)
        for outcome in outcomes:
            yield from outcome

    def _prepared(self, taken: list[Queued], outcomes: list[list[Outcome]]) -> list[Prepared | None]:
        """Each taken event's prepared input (None where it failed: its dead letter is put in ``outcomes``)."""
        if self._pool is None:
            items, errors = batch_or_each(self.adapter.prepare, [event for event, _ in taken], self.adapter.preparer)
            for i, message in errors.items():
                outcomes[i] = [dead(taken[i][0], self.adapter.failed_reason, message, self.adapter.failed_stage)]
            return items
        prepared: list[Prepared | None] = []
        taken = list(taken)
        for i, (event, future) in enumerate(taken):
            try:
                pending = future or self._pool.submit(self._prepare_one, event)
                prepared.append(pending.result(timeout=self.adapter.prepare_timeout_s))
                continue
            except FutureTimeout:
                self._abandon_hung_pool()
                self._rehome(taken, i + 1)  # the rest of this window must not wait on the abandoned pool
                message = f"fetching and decoding took longer than {self.adapter.prepare_timeout_s}s"
                outcomes[i] = [dead(event, Reason.DECODE_TIMEOUT, message, "decode")]
            except MediaError as exc:
                outcomes[i] = [dead(event, exc.reason, str(exc), "decode")]
            except Exception as exc:  # a decoder bug must cost one event, not the bundle
                message = f"{self.adapter.preparer}: {type(exc).__name__}: {exc}"
                outcomes[i] = [dead(event, self.adapter.failed_reason, message, self.adapter.failed_stage)]
            prepared.append(None)
        return prepared

    def _rehome(self, queued: list[Queued], start: int) -> None:
        """Move the work of ``queued[start:]`` not yet started to the current pool (what the old pool is busy
        with — another stuck call, maybe — stays there and is waited for as usual)."""
        for j in range(start, len(queued)):
            event, future = queued[j]
            if future is not None and future.cancel() and self._pool is not None:
                queued[j] = (event, self._pool.submit(self._prepare_one, event))

    def _prepare_one(self, event: ParsedEvent) -> Prepared:
        return self.adapter.prepare([event])[0]

    def _encode(self, items: list[Any]) -> list[dict[str, np.ndarray]]:
        """The adapter's ``encode``, timed; its space → matrix turned into one space → vector mapping per item."""
        started = time.perf_counter()
        by_space = self.adapter.encode(items)
        INGEST.encoded(self.adapter.stage, len(items), time.perf_counter() - started)
        return [{name: matrix[i] for name, matrix in by_space.items()} for i in range(len(items))]

    def _points(
        self, event: ParsedEvent, rows: list[dict[str, np.ndarray]], prepared: Prepared, at: str
    ) -> list[Outcome]:
        """The event's point(s), or its dead letter when any vector fails the quality gate."""
        for row in rows:
            for space in self._spaces:
                problem = vector_problem(row[space.name], space.dim)
                if problem is not None:
                    return [dead(event, problem[0], problem[1], "quality")]
        if prepared.parts:
            return self.adapter.document(event, prepared, rows, self._refs, at)
        vectors = {space.name: rows[0][space.name] for space in self._spaces}
        sparse = self.adapter.sparse(event.envelope.text or "")
        extra = prepared.facts or None
        return [point_or_dead(event, vectors, self._refs, at, extra, sparse, prepared.fields or None)]

    # --- the prepare pool ---
    def _new_pool(self) -> DaemonPool | None:
        threads = self.adapter.prepare_threads
        return DaemonPool(threads, f"prepare-{self.adapter.stage}") if threads else None

    def _abandon_hung_pool(self) -> None:
        """A hung decode cannot be stopped: leave its (daemon) thread to finish or hang in the old pool, so that the
        events behind it, shutdown and the process's exit do not wait for it; queued work not yet started moves
        to a new pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._pool = self._new_pool()
        queued = list(self._queue)
        self._rehome(queued, 0)
        self._queue = deque(queued)
