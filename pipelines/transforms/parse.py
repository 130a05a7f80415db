"""Parse + validate Kafka records into envelopes; everything else leaves as a tagged dead letter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam

from embedstream.pipelines.events import DeleteEvent, ParsedEvent
from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.envelope import Deletion, Limits, Modality, Rejection, parse_event
from embedstream.schemas.records import KafkaRecord


class ParseEvents(beam.DoFn):
    """One record in, exactly one out: a ``ParsedEvent``, a ``DeleteEvent`` or a ``DeadLetter``. Valid events of a
    modality this pipeline has no encoder for are dead-lettered too (``unsupported_modality``), so they can be
    replayed once it has one instead of being dropped. Records named in ``skip`` (``topic:partition:offset``)
    become ``skipped`` dead letters unread: the way past a record that stops a run (the error that stops it names
    the record)."""

    def __init__(self, limits: Limits, modalities: Iterable[Modality], skip: Iterable[str] = ()) -> None:
        self._limits = limits
        self._modalities = frozenset(modalities)
        self._skip = frozenset(skip)

    def process(self, record: KafkaRecord) -> Iterator[ParsedEvent | DeleteEvent | DeadLetter]:
        position = f"{record.topic}:{record.partition}:{record.offset}" if self._skip else ""
        if position in self._skip:
            message = f"skipped: {position} is listed in pipeline.skip (replay it once what stopped it is fixed)"
            yield DeadLetter.of(record, Reason.SKIPPED, message, "parse")
            return
        try:
            result = parse_event(record, self._limits)
        except Exception as exc:  # parse_event is written never to raise; if it does, the record still lands
            yield DeadLetter.of(record, Reason.STAGE_FAILED, f"parse raised {type(exc).__name__}: {exc}", "parse")
            return
        if isinstance(result, Rejection):
            yield DeadLetter.of(record, result.reason, result.message, "parse", result.event_id)
        elif isinstance(result, Deletion):
            yield DeleteEvent(result, record)  # needs no encoder, whatever its modality
        elif result.modality not in self._modalities:
            message = (
                f"no encoder for modality {result.modality.value!r} in this pipeline "
                f"(it embeds {sorted(m.value for m in self._modalities)}); replay this dead letter once it has one"
            )
            yield DeadLetter.of(record, Reason.UNSUPPORTED_MODALITY, message, "route", result.id)
        else:
            yield ParsedEvent(result, record)
