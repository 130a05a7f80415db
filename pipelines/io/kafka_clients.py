"""kafka-python clients configured from settings, and the few admin facts the pipeline needs.

Everything here is plain kafka-python: no JVM, no expansion service. High watermarks come from a fetch
response (``consumer.highwater``), which every Kafka-protocol broker reports correctly; ListOffsets LATEST
is not trusted (tansu gets it wrong, docs/measurements.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from embedstream.pipelines.io import kafka_diagnosis
from embedstream.schemas.errors import EmbedstreamError, NotFoundError
from embedstream.schemas.settings import KafkaSettings

FETCH_HEADROOM = 1 << 20
DEAD_LETTER_HEADROOM = 1 << 20  # the original headers and the es-dlq-* context beside the largest event


def dead_letter_limit(max_event_bytes: int) -> int:
    """The largest dead letter (key + value + headers) published whole; larger ones go by reference."""
    return max_event_bytes + DEAD_LETTER_HEADROOM


OUTPUT_HEADROOM = 4 << 20  # a point's vectors as JSON (~22 bytes a float, several spaces) beside its payload


def output_limit(max_event_bytes: int) -> int:
    """The largest embeddings-topic record: a point's payload (at most the event it came from) and its vectors."""
    return max_event_bytes + OUTPUT_HEADROOM


class BrokerUnavailableError(EmbedstreamError):
    """No Kafka broker answered at the configured bootstrap address."""


def _unavailable(settings: KafkaSettings, since: float) -> BrokerUnavailableError:
    """The one-line error for a client that could not bootstrap: the cause kafka-python logged since ``since``
    (``time.monotonic()`` when this client began) if it named one (refused credentials, an unsupported SASL
    mechanism, a failed TLS handshake), else "no broker"."""
    cause = kafka_diagnosis.cause_since(since)
    if cause is not None:
        return BrokerUnavailableError(f"the Kafka broker at {settings.bootstrap_servers} {cause}")
    if settings.security_protocol != "PLAINTEXT":
        # A broker that refuses credentials may just close the connection (Kafka delays, then drops it): say both.
        return BrokerUnavailableError(
            f"no Kafka broker answered at {settings.bootstrap_servers} over {settings.security_protocol}: check that "
            "one runs there and that kafka.security_protocol, sasl_mechanism, sasl_plain_username, "
            "sasl_plain_password and ssl_cafile match its listener (-v shows the client's connection log)"
        )
    return BrokerUnavailableError(
        f"no Kafka broker at {settings.bootstrap_servers} (EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS); "
        "start a local one with `embedstream broker start` or point the setting at your cluster"
    )


@contextlib.contextmanager
def _bootstrapping(settings: KafkaSettings) -> Iterator[None]:
    """Turn a client's bootstrap timeout into ``BrokerUnavailableError``, naming the cause logged meanwhile."""
    started = time.monotonic()
    try:
        yield
    except KafkaTimeoutError as exc:
        raise _unavailable(settings, started) from exc


def consumer(
    settings: KafkaSettings, max_event_bytes: int, group: bool = False, reset: str | None = None, **extra: Any
) -> KafkaConsumer:
    """A manually-assigned consumer. With ``group`` it may commit offsets for ``settings.group_id``. ``reset``
    overrides ``auto_offset_reset`` (readers that always seek say ``earliest``: an offset that went out of range
    then moves to what is still retained, never past it to the end)."""
    with _bootstrapping(settings):
        return KafkaConsumer(
            **settings.client_config(),
            group_id=settings.group_id if group else None,
            enable_auto_commit=False,
            auto_offset_reset=reset or settings.auto_offset_reset,
            isolation_level=settings.isolation_level,
            max_partition_fetch_bytes=max_event_bytes + FETCH_HEADROOM,
            fetch_max_bytes=max(52_428_800, max_event_bytes + FETCH_HEADROOM),
            session_timeout_ms=6000,
            heartbeat_interval_ms=2000,
            **extra,
        )


def broker_answers(settings: KafkaSettings, timeout_ms: int = 3000) -> None:
    """Raise ``BrokerUnavailableError`` unless a broker answers a metadata request within ``timeout_ms``."""
    started = time.monotonic()
    try:
        client = KafkaConsumer(**{**settings.client_config(), "bootstrap_timeout_ms": timeout_ms})
    except Exception as exc:
        raise _unavailable(settings, started) from exc
    try:
        if client.topics() is None:
            raise _unavailable(settings, started)
    except KafkaTimeoutError as exc:
        raise _unavailable(settings, started) from exc
    finally:
        client.close()


def producer(settings: KafkaSettings, max_event_bytes: int, **extra: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas: a dead letter is durable before its offset commits."""
    with _bootstrapping(settings):
        return KafkaProducer(
            **settings.client_config(),
            acks="all",
            retries=5,
            linger_ms=5,
            max_request_size=max_event_bytes + FETCH_HEADROOM,
            **extra,
        )


def ensure_topics(
    settings: KafkaSettings, topics: list[str], max_message_bytes: int | None = None, compacted: bool = False
) -> None:
    """Create missing topics with ``settings.partitions`` partitions (existing ones are left alone).

    ``max_message_bytes`` sets the topics' ``max.message.bytes``: the dead-letter topic must take the largest
    event plus its headers, where a broker's default (~1 MiB) would refuse it. ``compacted``: the broker keeps
    each key's last record (``cleanup.policy=compact``), as the embeddings topic wants."""
    with _bootstrapping(settings):
        admin = KafkaAdminClient(**settings.client_config())
    try:
        missing = [t for t in topics if t not in set(admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile by someone else
                configs = {"max.message.bytes": str(max_message_bytes + FETCH_HEADROOM)} if max_message_bytes else {}
                if compacted:
                    configs["cleanup.policy"] = "compact"
                admin.create_topics([NewTopic(t, settings.partitions, 1, topic_configs=configs) for t in missing])
    finally:
        admin.close()


@dataclass(frozen=True)
class PartitionSpec:
    """One partition to read, from ``start`` (inclusive) to ``stop`` (exclusive; None = unbounded)."""

    topic: str
    partition: int
    start: int
    stop: int | None


def partitions_of(client: KafkaConsumer, topic: str, timeout_s: float = 10.0) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = client.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() > deadline:
            raise NotFoundError(f"topic {topic!r} has no partitions (does it exist?)")
        time.sleep(0.1)


def high_watermarks(
    settings: KafkaSettings, partitions: list[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """Each partition's high watermark, read from fetch responses by a short-lived consumer of its own (the
    pausing below leaves a consumer unfit for reading afterwards)."""
    client = consumer(settings, 1 << 20)
    try:
        client.assign(partitions)
        client.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while missing := [tp for tp in partitions if client.highwater(tp) is None]:
            if time.monotonic() > deadline:
                left = [tp.partition for tp in missing]
                raise BrokerUnavailableError(f"no high watermark for partitions {left} within {timeout_s}s")
            client.poll(timeout_ms=200, max_records=1)
            # A partition's fetch response is parsed only once the records before it are drained; pausing the
            # partitions already known lets the next poll reach the others.
            client.pause(*[tp for tp in partitions if client.highwater(tp) is not None])
        return {tp: int(client.highwater(tp)) for tp in partitions}
    finally:
        client.close()


def topic_watermarks(settings: KafkaSettings, topic: str) -> dict[TopicPartition, int]:
    """Every partition of ``topic`` with its high watermark now."""
    client = consumer(settings, 1 << 20)
    try:
        partitions = partitions_of(client, topic)
    finally:
        client.close()
    return high_watermarks(settings, partitions)


def assign_readable(
    reader: KafkaConsumer, settings: KafkaSettings, topic: str, from_committed: bool = False
) -> dict[TopicPartition, int]:
    """Assign every partition of ``topic`` at the reader's group offset (or the start); return the high
    watermarks taken now, which ``records_until`` reads up to."""
    tps = partitions_of(reader, topic)
    marks = high_watermarks(settings, tps)
    reader.assign(tps)
    for tp in tps:
        committed = reader.committed(tp) if from_committed else None
        if committed is None:
            reader.seek_to_beginning(tp)
        else:
            reader.seek(tp, committed)
    return marks


def records_until(reader: KafkaConsumer, marks: dict[TopicPartition, int], timeout_s: float) -> Iterator[Any]:
    """Records up to ``marks`` (exclusive) in partition order; never waits past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while any(reader.position(tp) < mark for tp, mark in marks.items()):
        if time.monotonic() > deadline:
            stuck = [(tp.topic, tp.partition, reader.position(tp), mark) for tp, mark in marks.items()]
            raise TimeoutError(f"could not read to the high watermarks within {timeout_s}s: {stuck}")
        for tp, records in reader.poll(timeout_ms=300).items():
            yield from (r for r in records if r.offset < marks[tp])


def shard_partitions(client: KafkaConsumer, settings: KafkaSettings, shard: tuple[int, int]) -> set[TopicPartition]:
    """The partitions of the topics ``settings`` reads that belong to ``shard`` = (I, N): p mod N == I."""
    index, count = shard
    topics = settings.read_topics(set(client.topics()) if settings.topic_pattern else set())
    return {tp for topic in topics for tp in partitions_of(client, topic) if tp.partition % count == index}


def current_partitions(settings: KafkaSettings, shard: tuple[int, int]) -> set[tuple[str, int]]:
    """What ``partition_plan.plan_partitions`` would plan now (fresh metadata): to notice topics and partitions
    that appear."""
    client = consumer(settings, 1 << 20)
    try:
        return {(tp.topic, tp.partition) for tp in shard_partitions(client, settings, shard)}
    finally:
        client.close()


class Backlog(NamedTuple):
    """What a partition still has to deliver: records (high watermark − committed offset), and how long ago
    the oldest of them reached Kafka (its timestamp; 0 when nothing is waiting)."""

    lag: int
    oldest_age_s: float


def partition_backlog(settings: KafkaSettings, specs: list[PartitionSpec]) -> dict[tuple[str, int], Backlog]:
    """The backlog of each partition of ``specs`` (for the lag and age metrics). The age is read from the
    record at the committed offset: the first one not yet durable."""
    tps = [TopicPartition(spec.topic, spec.partition) for spec in specs]
    marks = high_watermarks(settings, tps)
    client = consumer(settings, 1 << 20, group=True)
    try:
        committed = {tp: client.committed(tp) or 0 for tp in tps}
    finally:
        client.close()
    waiting = {tp: offset for tp, offset in committed.items() if marks[tp] > offset}
    oldest = _timestamps_at(settings, waiting) if waiting else {}
    now_ms = time.time() * 1000
    return {
        (tp.topic, tp.partition): Backlog(
            max(0, marks[tp] - committed[tp]),
            max(0.0, (now_ms - oldest[tp]) / 1000) if tp in oldest else 0.0,
        )
        for tp in tps
    }


def _timestamps_at(
    settings: KafkaSettings, offsets: dict[TopicPartition, int], timeout_s: float = 2.0
) -> dict[TopicPartition, int]:
    """The Kafka timestamp (ms) of the record at each given offset (partitions that answer within the time)."""
    reader = consumer(settings, 1, max_poll_records=len(offsets) * 4)  # small fetches: one record is enough
    try:
        reader.assign(list(offsets))
        for tp, offset in offsets.items():
            reader.seek(tp, offset)
        found: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(offsets) and time.monotonic() < deadline:
            for tp, records in reader.poll(timeout_ms=200).items():
                if tp not in found and records and records[0].timestamp is not None and records[0].timestamp >= 0:
                    found[tp] = records[0].timestamp
                    reader.pause(tp)
        return found
    finally:
        reader.close()


def committed_offsets(settings: KafkaSettings) -> dict[int, int | None]:
    """The group's committed offset per partition of the events topic (for tools and tests)."""
    client = consumer(settings, 1 << 20, group=True)
    try:
        return {tp.partition: client.committed(tp) for tp in partitions_of(client, settings.topic)}
    finally:
        client.close()
