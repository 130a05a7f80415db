"""Look into the dead-letter topic, and replay what can now succeed.

A dead letter is the original message plus ``es-dlq-*`` context headers, so replay strips those headers and
re-produces key, value and the original headers to the events topic (or another). Replay reads with a
consumer group of its own (``<group_id>.dlq-replay``, suffixed with the reason filter) and commits only after
the broker acknowledged the re-produced messages: running it twice does not replay twice, and a crash replays
at most what was not yet acknowledged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from pipelines.io.kafka_clients import consumer, ensure_topics, high_watermarks, partitions_of, producer
from schemas.dead_letter import DLQ_HEADER_PREFIX, DeadLetter
from schemas.settings import Settings


@dataclass
class DlqReport:
    by_reason: Counter[str] = field(default_factory=Counter)
    replayed: int = 0


def _position(reader: KafkaConsumer, settings: Settings, from_committed: bool) -> dict[TopicPartition, int]:
    """Assign every dead-letter partition at the group's offset (or the start); return the high watermarks."""
    tps = partitions_of(reader, settings.kafka.dead_letter_topic)
    marks = high_watermarks(settings.kafka, tps)
    reader.assign(tps)
    for tp in tps:
        committed = reader.committed(tp) if from_committed else None
        if committed is None:
            reader.seek_to_beginning(tp)
        else:
            reader.seek(tp, committed)
    return marks


def _records(reader: KafkaConsumer, marks: dict[TopicPartition, int], timeout_s: float) -> Iterator[Any]:
    """Records up to the high watermarks taken when positioning; never waits past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while any(reader.position(tp) < mark for tp, mark in marks.items()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read the dead-letter topic to its end within {timeout_s}s")
        for tp, records in reader.poll(timeout_ms=500).items():
            yield from (r for r in records if r.offset < marks[tp])


def stats(settings: Settings, timeout_s: float = 30.0) -> Counter[str]:
    """All dead letters on the topic, counted by reason code."""
    reader = consumer(settings.kafka, settings.pipeline.max_event_bytes)
    try:
        marks = _position(reader, settings, from_committed=False)
        return Counter(
            DeadLetter.context_of(list(r.headers or [])).get("reason", "unknown")
            for r in _records(reader, marks, timeout_s)
        )
    finally:
        reader.close()


def replay(
    settings: Settings, reasons: Iterable[str] = (), to_topic: str | None = None, timeout_s: float = 30.0
) -> DlqReport:
    """Re-produce the dead letters not yet replayed whose reason is in ``reasons`` (all when empty)."""
    wanted = sorted(set(reasons))
    group = f"{settings.kafka.group_id}.dlq-replay" + (f".{'+'.join(wanted)}" if wanted else "")
    kafka = settings.kafka.model_copy(update={"group_id": group})
    target = to_topic or settings.kafka.topic
    ensure_topics(settings.kafka, [target])
    reader = consumer(kafka, settings.pipeline.max_event_bytes, group=True)
    sender = producer(kafka, settings.pipeline.max_event_bytes)
    report = DlqReport()
    try:
        marks = _position(reader, settings.model_copy(update={"kafka": kafka}), from_committed=True)
        for record in _records(reader, marks, timeout_s):
            headers = list(record.headers or [])
            reason = DeadLetter.context_of(headers).get("reason", "unknown")
            report.by_reason[reason] += 1
            if not wanted or reason in wanted:
                original = [(k, v) for k, v in headers if not k.startswith(DLQ_HEADER_PREFIX)]
                sender.send(target, key=record.key, value=record.value, headers=original)
                report.replayed += 1
        sender.flush()  # acknowledged before the replay group moves past them
        done = {tp: OffsetAndMetadata(mark, "", -1) for tp, mark in marks.items() if mark > 0}
        if done:
            reader.commit(done)
        return report
    finally:
        reader.close()
        sender.close()
