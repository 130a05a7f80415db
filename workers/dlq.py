"""Look into the dead-letter topic, and replay what can now succeed — each dead letter once, nothing lost.

A dead letter is the original message plus ``es-dlq-*`` context headers; its identity is the position of the
record that failed (``es-dlq-topic/partition/offset``), so the same record dead-lettered twice (a crash
between publishing and committing) counts and replays once. Replay re-produces key, value and the original
headers with the original timestamp, adding:

* ``es-replay-topic``, ``-partition``, ``-offset``, ``-ts``: where the event first entered Kafka (kept from an
  earlier replay). The point keeps that position as its ``source``, and the pipeline refuses to let a replayed
  event overwrite a newer version of its id (a ``superseded`` dead letter instead);
* ``es-replay-id``: the dead letter's identity.

Idempotence without transactions (tansu has none) comes from a ledger topic, ``<dead-letter topic>.replayed``:
``done/<target>/<identity>`` once the broker acknowledged the re-produced event (per target: a copy sent to a
quarantine topic does not count for the events topic), and ``scan/<target>``, the target's
high watermarks when a replay begins. A replay killed between a send and its ledger entry is recovered by the
next one, which reads the target from the last scan mark for ``es-replay-id`` headers before it sends
anything. Every reason filter shares the one ledger: a filtered replay followed by a full one sends each dead
letter once. A send the broker did not acknowledge gets no ledger entry and raises ``ReplayError`` after the
acknowledged ones are recorded: rerunning replays exactly what is missing.

A dead letter published *by reference* (its bytes did not fit, or the store refused its point) is replayed
from its source position while the source topic still retains it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from embedstream.pipelines.io.kafka_clients import (
    assign_readable,
    consumer,
    dead_letter_limit,
    ensure_topics,
    producer,
    records_until,
    topic_watermarks,
)
from embedstream.schemas.dead_letter import (
    BY_REFERENCE,
    DLQ_HEADER_PREFIX,
    REPLAY_HEADER_PREFIX,
    DeadLetter,
    identity_of,
)
from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import Settings

REPLAY_ID = REPLAY_HEADER_PREFIX + "id"
SEND_BATCH = 500
REPLAY_REQUEST_BYTES = 16 << 20
# A replay target that does not exist yet (a quarantine topic) is created to take what a dead letter can point
# back to, oversized originals included: a broker enforces the topic's max.message.bytes (tansu does not).
REPLAY_TOPIC_BYTES = 16 << 20
SEND_TIMEOUT_S = 30


class ReplayError(EmbedstreamError):
    """Some re-produced events were not acknowledged; those are not recorded and replay again next time."""


@dataclass
class DlqReport:
    by_reason: Counter[str] = field(default_factory=Counter)  # distinct dead letters, by reason
    replayed: int = 0
    already_replayed: int = 0
    duplicates: int = 0  # copies of a dead letter already seen (same failed record)
    unavailable: int = 0  # by reference, and the source topic no longer has the record


def ledger_topic(settings: Settings) -> str:
    return f"{settings.kafka.dead_letter_topic}.replayed"


def _read_all(settings: Settings, topic: str, timeout_s: float, from_marks: dict[int, int] | None = None) -> Any:
    """Every record of ``topic`` up to its high watermarks (from ``from_marks`` where given). Read uncommitted:
    what is looked for here (dead letters, this tool's own replays) is never written in a transaction, while a
    producer's open transaction on the same topic would hold a read_committed reader below the high watermark."""
    kafka = settings.kafka.model_copy(update={"isolation_level": "read_uncommitted"})
    reader = consumer(kafka, settings.pipeline.max_event_bytes)
    try:
        marks = assign_readable(reader, settings.kafka, topic)
        if from_marks is not None:
            for tp, mark in marks.items():
                reader.seek(tp, min(from_marks.get(tp.partition, 0), mark))
        yield from records_until(reader, marks, timeout_s)
    finally:
        reader.close()


def _distinct(records: Iterable[Any], report: DlqReport) -> Iterator[tuple[str, dict[str, str], Any]]:
    """(identity, es-dlq context, record) for each distinct dead letter; counts duplicates and reasons."""
    seen: set[str] = set()
    for record in records:
        context = DeadLetter.context_of(list(record.headers or []))
        identity = identity_of(context)
        if identity in seen:
            report.duplicates += 1
            continue
        seen.add(identity)
        report.by_reason[context.get("reason", "unknown")] += 1
        yield identity, context, record


def stats(settings: Settings, timeout_s: float = 30.0) -> Counter[str]:
    """Distinct dead letters on the topic (a record dead-lettered twice counts once), by reason code."""
    report = DlqReport()
    for _ in _distinct(_read_all(settings, settings.kafka.dead_letter_topic, timeout_s), report):
        pass
    return report.by_reason


class _Ledger:
    def __init__(self, settings: Settings, target: str, timeout_s: float) -> None:
        self.topic = ledger_topic(settings)
        ensure_topics(settings.kafka.model_copy(update={"partitions": 1}), [self.topic])
        self.done: set[str] = set()
        self.scan_from: dict[int, int] | None = None
        for record in _read_all(settings, self.topic, timeout_s):
            key = (record.key or b"").decode("utf-8", "replace")
            if key.startswith(f"done/{target}/"):  # per target: a quarantine copy does not count for the events topic
                self.done.add(key[len(f"done/{target}/") :])
            elif key == f"scan/{target}":
                self.scan_from = {int(p): int(o) for p, o in json.loads(record.value).items()}
        self._producer = producer(settings.kafka, 1 << 20)

    def record(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Append entries and wait until the broker has them all."""
        sends = [
            self._producer.send(self.topic, key=key.encode(), value=json.dumps(value).encode())
            for key, value in entries
        ]
        self._producer.flush()
        for send in sends:
            send.get(timeout=SEND_TIMEOUT_S)

    def close(self) -> None:
        self._producer.close()


def _recover(settings: Settings, ledger: _Ledger, target: str, timeout_s: float) -> None:
    """Record sends of a replay that died before its ledger entries (found in the target since the last scan)."""
    if ledger.scan_from is None:
        return
    found = []
    for record in _read_all(settings, target, timeout_s, from_marks=ledger.scan_from):
        replay_id = dict(record.headers or []).get(REPLAY_ID)
        if replay_id is not None and replay_id.decode() not in ledger.done:
            found.append(replay_id.decode())
    if found:
        now = datetime.now(UTC).isoformat()
        ledger.record([(f"done/{target}/{identity}", {"at": now, "recovered": True}) for identity in found])
        ledger.done.update(found)


def _original(settings: Settings, context: dict[str, str], record: Any, timeout_s: float) -> Any | None:
    """The record a by-reference dead letter points at, read from its source topic (None when gone)."""
    if context.get(BY_REFERENCE) != "1":
        return record
    tp = TopicPartition(context["topic"], int(context["partition"]))
    offset = int(context["offset"])
    reader = consumer(settings.kafka, settings.pipeline.max_event_bytes)
    try:
        reader.assign([tp])
        try:
            retained_from = reader.beginning_offsets([tp], timeout_ms=int(timeout_s * 1000)).get(tp, 0)
        except KafkaError:
            return None  # the topic or partition is gone (or never answers): nothing to read it from
        if offset < retained_from:
            return None  # deleted by the broker (retention, DeleteRecords): nothing to wait for
        reader.seek(tp, offset)
        for _ in range(int(timeout_s / 0.5)):
            for found in reader.poll(timeout_ms=500).get(tp, []):
                return found if found.offset == offset else None
        return None
    finally:
        reader.close()


def _replay_headers(context: dict[str, str], original: Any, identity: str) -> list[tuple[str, bytes]]:
    """The original headers, the origin (kept from an earlier replay, else the failed record's position)."""
    headers = [(k, v) for k, v in (original.headers or []) if not k.startswith(DLQ_HEADER_PREFIX) and k != REPLAY_ID]
    if not any(k.startswith(REPLAY_HEADER_PREFIX) for k, _ in headers):
        origin = {"topic": context.get("topic"), "partition": context.get("partition"), "offset": context.get("offset")}
        if original.timestamp is not None and original.timestamp >= 0:
            origin["ts"] = str(original.timestamp)
        headers += [(REPLAY_HEADER_PREFIX + k, str(v).encode()) for k, v in origin.items() if v is not None]
    return [*headers, (REPLAY_ID, identity.encode())]


def replay(
    settings: Settings, reasons: Iterable[str] = (), to_topic: str | None = None, timeout_s: float = 30.0
) -> DlqReport:
    """Re-produce every distinct dead letter not replayed before whose reason is in ``reasons`` (all if empty)."""
    wanted = set(reasons)
    target = to_topic or settings.kafka.topic
    ensure_topics(settings.kafka, [target], max(settings.pipeline.max_event_bytes, REPLAY_TOPIC_BYTES))
    ledger = _Ledger(settings, target, timeout_s)
    # Dead letters can be larger than an event (an oversized one replayed to a quarantine topic): the broker's
    # own limit decides, not this client's.
    sender = producer(settings.kafka, max(dead_letter_limit(settings.pipeline.max_event_bytes), REPLAY_REQUEST_BYTES))
    report = DlqReport()
    try:
        _recover(settings, ledger, target, timeout_s)
        ledger.record(
            [(f"scan/{target}", {str(tp.partition): m for tp, m in topic_watermarks(settings.kafka, target).items()})]
        )
        pending: list[tuple[str, Any]] = []
        dead_letters = _read_all(settings, settings.kafka.dead_letter_topic, timeout_s)
        for identity, context, record in _distinct(dead_letters, report):
            if wanted and context.get("reason", "unknown") not in wanted:
                continue
            if identity in ledger.done:
                report.already_replayed += 1
                continue
            original = _original(settings, context, record, timeout_s)
            if original is None:
                report.unavailable += 1
                continue
            timestamp = original.timestamp if original.timestamp is not None and original.timestamp >= 0 else None
            try:
                send: Any = sender.send(
                    target,
                    key=original.key,
                    value=original.value,
                    headers=_replay_headers(context, original, identity),
                    timestamp_ms=timestamp,
                )
            except Exception as exc:  # refused before it left (too large for this client): not sent, not recorded
                send = exc
            pending.append((identity, send))
            if len(pending) >= SEND_BATCH:
                report.replayed += _confirm(sender, ledger, target, pending)
                pending = []
        report.replayed += _confirm(sender, ledger, target, pending)
        return report
    finally:
        sender.close()
        ledger.close()


def _confirm(sender: Any, ledger: _Ledger, target: str, pending: list[tuple[str, Any]]) -> int:
    """Wait for the broker; record the acknowledged sends in the ledger; raise if any was not acknowledged."""
    if not pending:
        return 0
    sender.flush()
    acked, failed = [], []
    for identity, send in pending:
        try:
            if isinstance(send, Exception):
                raise send
            send.get(timeout=SEND_TIMEOUT_S)
            acked.append(identity)
        except Exception as error:
            failed.append((identity, error))
    now = datetime.now(UTC).isoformat()
    ledger.record([(f"done/{target}/{identity}", {"at": now}) for identity in acked])
    ledger.done.update(acked)
    if failed:
        first, cause = failed[0]
        raise ReplayError(
            f"{len(failed)} of {len(pending)} replayed events were not acknowledged (first: {first}: {cause}); "
            f"{len(acked)} were and are recorded; run the replay again for the rest"
        )
    return len(acked)
