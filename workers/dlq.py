"""Look into the dead-letter topic, and replay what can now succeed.

A dead letter is the original message plus ``es-dlq-*`` context headers, so replay strips those headers and
re-produces key, value and the original headers to the events topic (or another). Replay reads with a
consumer group of its own (``<group_id>.dlq-replay``, suffixed with the reason filter) and commits only after
the broker acknowledged the re-produced messages: running it twice does not replay twice, and a crash replays
at most what was not yet acknowledged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from kafka.structs import OffsetAndMetadata

from embedstream.pipelines.io.kafka_clients import assign_readable, consumer, ensure_topics, producer, records_until
from embedstream.schemas.dead_letter import DLQ_HEADER_PREFIX, DeadLetter
from embedstream.schemas.settings import Settings


@dataclass
class DlqReport:
    by_reason: Counter[str] = field(default_factory=Counter)
    replayed: int = 0


def stats(settings: Settings, timeout_s: float = 30.0) -> Counter[str]:
    """All dead letters on the topic, counted by reason code."""
    reader = consumer(settings.kafka, settings.pipeline.max_event_bytes)
    try:
        marks = assign_readable(reader, settings.kafka, settings.kafka.dead_letter_topic)
        return Counter(
            DeadLetter.context_of(list(r.headers or [])).get("reason", "unknown")
            for r in records_until(reader, marks, timeout_s)
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
        marks = assign_readable(reader, kafka, kafka.dead_letter_topic, from_committed=True)
        for record in records_until(reader, marks, timeout_s):
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
