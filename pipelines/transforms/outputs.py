"""Small shared shapes of DoFn output: a dead letter for an event, a value placed in the global window.

Dead letters travel down the one chain as ordinary elements (every stage passes on what is not its own), so
the chain ends in one delivery step that makes points and dead letters durable together — on every runner,
including those that compute only a pipeline's last leaf (Dask).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from embedstream.pipelines.events import ParsedEvent
from embedstream.schemas.dead_letter import DeadLetter, Reason


def dead(event: ParsedEvent, reason: Reason, message: str, stage: str) -> DeadLetter:
    """The dead letter for ``event``."""
    return DeadLetter.of(event.record, reason, message, stage, event.envelope.id)


def in_global_window(value: Any) -> WindowedValue:
    """``finish_bundle`` must emit windowed values; this pipeline has only the global window."""
    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


def windowed(outputs: Iterable[Any]) -> Iterator[WindowedValue]:
    """What ``process`` may yield, as ``finish_bundle`` must yield it."""
    for output in outputs:
        yield in_global_window(output)
