"""Parse + validate Kafka records into envelopes; everything else leaves as a tagged dead letter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam

from embedstream.pipelines.transforms import DEAD_LETTER
from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.envelope import Envelope, Limits, Modality, Rejection, parse_event
from embedstream.schemas.records import KafkaRecord


@dataclass(frozen=True)
class ParsedEvent:
    """A valid envelope together with the record it came from (for payload provenance and commits)."""

    envelope: Envelope
    record: KafkaRecord


class ParseEvents(beam.DoFn):
    """One record in, exactly one out: a ``ParsedEvent`` on the main output or a ``DeadLetter`` tagged
    ``dead_letter``. Valid events of a modality this pipeline has no encoder for are dead-lettered too
    (``unsupported_modality``), so they can be replayed once it has one instead of being dropped."""

    def __init__(self, limits: Limits, modalities: Iterable[Modality]) -> None:
        self._limits = limits
        self._modalities = frozenset(modalities)

    def process(self, record: KafkaRecord) -> Iterator[ParsedEvent | beam.pvalue.TaggedOutput]:
        result = parse_event(record, self._limits)
        if isinstance(result, Rejection):
            dead = DeadLetter.of(record, result.reason, result.message, "parse", result.event_id)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
        elif result.modality not in self._modalities:
            message = (
                f"no encoder for modality {result.modality.value!r} in this pipeline "
                f"(it embeds {sorted(m.value for m in self._modalities)}); replay this dead letter once it has one"
            )
            dead = DeadLetter.of(record, Reason.UNSUPPORTED_MODALITY, message, "route", result.id)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
        else:
            yield ParsedEvent(result, record)
