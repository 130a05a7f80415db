"""Small shared shapes of DoFn output: a dead letter on its tagged output, a value placed in the global window."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from embedstream.pipelines.transforms import DEAD_LETTER
from embedstream.pipelines.transforms.parse import ParsedEvent
from embedstream.schemas.dead_letter import DeadLetter, Reason


def dead(event: ParsedEvent, reason: Reason, message: str, stage: str) -> beam.pvalue.TaggedOutput:
    """The dead letter for ``event`` on the ``dead_letter`` output."""
    return beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter.of(event.record, reason, message, stage, event.envelope.id))


def in_global_window(value: Any) -> WindowedValue:
    """``finish_bundle`` must emit windowed values; this pipeline has only the global window."""
    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


def windowed(outputs: Iterable[Any]) -> Iterator[Any]:
    """What ``process`` may yield (values, tagged outputs), as ``finish_bundle`` must yield it."""
    for output in outputs:
        if isinstance(output, beam.pvalue.TaggedOutput):
            yield beam.pvalue.TaggedOutput(output.tag, in_global_window(output.value))
        else:
            yield in_global_window(output)
