"""Explicit, picklable handles to objects one process shares with the pipeline it runs (Beam's ``Shared`` idea).

A DoFn is pickled when the pipeline is built and unpickled where it runs. Some objects must not be copied
that way but *shared*: the embedded store that ``serve --ingest`` opens once for both its API and its
in-process pipeline (qdrant-edge lets one opener hold a path), the stop signal a launcher sets, the
progress counters a launcher reports. The owner registers the object and passes the ``Handle`` explicitly
to whoever needs it; a handle pickles as its key only, and ``get`` on the unpickled copy, in the same process,
returns the very object. Nothing changes behaviour by a process-global switch: code that was given no
handle opens its own store, watches no stop, counts nothing.

On a runner whose workers live in other processes (Flink, Dataflow, an EXTERNAL pool) ``get`` finds no
object and raises ``HandleGoneError``: those runners refuse the embedded store (``runners.check_runner``)
and do not see the launcher's stop (the launcher cancels the job instead), so the pipeline asks
``available`` first where a missing object is expected.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Generic, TypeVar

from embedstream.schemas.errors import EmbedstreamError

T = TypeVar("T")

_lock = threading.Lock()
_objects: dict[str, Any] = {}


class HandleGoneError(EmbedstreamError):
    """The object a handle names is not in this process (released, or the handle travelled to a worker)."""


class Handle(Generic[T]):
    """A name for one registered object; pickles as the name."""

    def __init__(self, key: str, what: str) -> None:
        self.key = key
        self.what = what

    @classmethod
    def register(cls, obj: T, what: str) -> Handle[T]:
        """Share ``obj`` under a new key; ``what`` names it in errors."""
        key = f"{what}:{uuid.uuid4().hex}"
        with _lock:
            _objects[key] = obj
        return cls(key, what)

    @property
    def available(self) -> bool:
        with _lock:
            return self.key in _objects

    def get(self) -> T:
        with _lock:
            if self.key not in _objects:
                raise HandleGoneError(f"the shared {self.what} is not open in this process (released by its owner?)")
            found: T = _objects[self.key]
            return found

    def release(self) -> None:
        """Forget the object: later ``get`` calls raise. The owner closes the object itself."""
        with _lock:
            _objects.pop(self.key, None)

    def __repr__(self) -> str:
        return f"Handle({self.key!r})"
