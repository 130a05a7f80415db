"""Delivery promises with real parts (tansu, the exported model, qdrant-edge): no record stops ingestion for
good, a replay neither loses, duplicates nor overwrites newer data, and one reader holds a partition."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter

import numpy as np
import pytest
from apache_beam.io.restriction_trackers import OffsetRange
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from embedstream.pipelines import ingest
from embedstream.pipelines.events import ParsedEvent
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.dead_letter_publisher import DeadLetterPublisher
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.io.kafka_read import CheckpointOnlyTracker
from embedstream.pipelines.io.partition_owner import Claim, PartitionOwnedError, owners_group
from embedstream.pipelines.io.partition_plan import plan_partitions
from embedstream.pipelines.io.point_writer import PointWriter
from embedstream.pipelines.stores import SpaceSpec, StoreWriteError, open_store
from embedstream.pipelines.transforms.adapters import TextAdapter
from embedstream.pipelines.transforms.embed import Embed
from embedstream.pipelines.transforms.points import point_or_dead
from embedstream.schemas.dead_letter import DeadLetter, Reason
from embedstream.schemas.envelope import Envelope, Modality
from embedstream.schemas.point import PointRecord, SourceRef, point_id
from embedstream.schemas.records import KafkaRecord
from embedstream.workers import dlq
from tests.helpers import read_topic, reset_group, send_raw, stored_ids, text_event, watermarks

pytestmark = pytest.mark.brokers("tansu", "kafka")


def dead_letters(settings) -> list:
    return read_topic(settings, settings.kafka.dead_letter_topic)


def reasons(settings) -> Counter:
    return Counter(DeadLetter.context_of(r.headers)["reason"] for r in dead_letters(settings))


def raw_event(body: str) -> bytes:
    return body.encode("utf-8")


POISON = {
    # valid for Python's json, not for JSON or the store
    "surrogate": raw_event('{"schema":1,"id":"surrogate","modality":"text","text":"bad \\ud800 text"}'),
    "nan": raw_event('{"schema":1,"id":"nan","modality":"text","text":"fine","metadata":{"score":NaN}}'),
    "inf": raw_event('{"schema":1,"id":"inf","modality":"text","text":"fine","metadata":{"score":1e400}}'),
    "bigint": raw_event('{"schema":1,"id":"bigint","modality":"text","text":"fine","metadata":{"n":' + "9" * 30 + "}}"),
    "deep": raw_event(
        '{"schema":1,"id":"deep","modality":"text","text":"fine","metadata":{"a":' + "[" * 100 + "]" * 100 + "}}"
    ),
    "very-deep": raw_event("[" * 100_000 + "]" * 100_000),
    "surrogate-key": raw_event('{"schema":1,"id":"sk","modality":"text","text":"fine","metadata":{"\\udfff":1}}'),
}


@pytest.mark.integration
def test_poison_records_become_dead_letters_and_valid_neighbours_land(make_settings):
    settings = make_settings(kafka={"partitions": 1})
    # Apache Kafka refuses timestamps over an hour ahead unless the topic allows them (tansu takes any)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    future = {"message.timestamp.after.max.ms": str(2**63 - 1)}
    admin.create_topics([NewTopic(settings.kafka.topic, 1, 1, topic_configs=future)])
    admin.close()
    records = []
    for i, (name, value) in enumerate(POISON.items()):
        records.append((f"ok-{i}".encode(), text_event(f"ok-{i}", f"a valid sentence number {i}"), []))
        records.append((name.encode(), value, []))
    records.append((b"tomb", None, []))  # a tombstone for a key never stored: a deletion of nothing, no dead letter
    records.append((b"empty", b"", []))  # an empty value that is not null stays a dead letter
    records.append((b"ok-last", text_event("ok-last", "the last valid sentence"), []))
    send_raw(settings, records)
    producer = KafkaProducer(bootstrap_servers=[settings.kafka.bootstrap_servers])
    far_future = 253_402_300_800_000 + 10**9  # after year 9999: no datetime can hold it
    producer.send(
        settings.kafka.topic, key=b"ts", value=text_event("ts", "a far-future timestamp"), timestamp_ms=far_future
    )
    producer.flush()
    producer.close()

    result = run_ingest(settings)

    assert stored_ids(settings) == {f"ok-{i}" for i in range(len(POISON))} | {"ok-last", "ts"}
    assert result.points_upserted == len(POISON) + 2 and result.dead_letters == len(POISON) + 1
    assert result.deletions == 1
    found = reasons(settings)
    assert found == {"invalid_utf8": 2, "malformed_json": 2, "invalid_field": 4}, found  # empty: malformed
    empty = next(r for r in dead_letters(settings) if r.key == b"empty")
    assert empty.value == b"" and not any(r.key == b"tomb" for r in dead_letters(settings))
    assert committed_offsets(settings.kafka) == watermarks(settings)
    assert run_ingest(settings).points_upserted == 0  # committed: a rerun does not meet them again


@pytest.mark.integration
def test_a_dead_letter_too_large_to_publish_goes_by_reference_and_replays_from_its_source(make_settings):
    settings = make_settings(kafka={"partitions": 1}, pipeline={"max_event_bytes": 1000})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    huge = json.dumps({"schema": 1, "id": "huge", "modality": "text", "text": "x" * 1_200_000}).encode()
    send_raw(settings, [(b"huge", huge, [("trace", b"7")]), (b"fine", text_event("fine", "small and fine"), [])])

    run_ingest(settings)

    (letter,) = dead_letters(settings)
    context = DeadLetter.context_of(letter.headers)
    assert context["reason"] == "oversized" and context["by-reference"] == "1" and letter.value == b""
    assert stored_ids(settings) == {"fine"}
    report = dlq.replay(settings, to_topic=f"{settings.kafka.topic}.quarantine")
    assert report.replayed == 1
    (copy,) = read_topic(settings, f"{settings.kafka.topic}.quarantine")
    assert copy.value == huge and dict(copy.headers)["trace"] == b"7"


@pytest.mark.integration
def test_the_store_refusing_one_point_costs_that_point_and_refusing_all_names_the_way_past(make_settings):
    settings = make_settings()
    store = open_store(settings.qdrant)
    store.ensure_spaces([SpaceSpec("v", 2, "m@1")])

    def point(name: str, metadata: object) -> PointRecord:
        payload = {"id": name, "modality": "text", "metadata": metadata}
        return PointRecord(
            id=point_id("text", name),
            vectors={"v": [1.0, 0.5]},
            payload=payload,
            source=SourceRef(topic="t", partition=0, offset=len(name)),
        )

    try:
        writer = PointWriter(store, 10, None, lambda n: None)
        for p in (point("a", {}), point("poison", {"x": float("nan")}), point("b", {})):  # a bug let NaN through
            writer.add(p)
        _, dead = writer.flush()
        assert {p.payload["id"] for p in store.scroll()} == {"a", "b"}
        (letter,) = dead
        assert letter.reason == "store_rejected" and letter.by_reference and letter.source.offset == len("poison")

        writer.add(point("alone", {"x": float("nan")}))
        with pytest.raises(StoreWriteError, match=r"EMBEDSTREAM_PIPELINE__SKIP='\[\"t:0:5\"\]'"):
            writer.flush()
    finally:
        store.close()


@pytest.mark.integration
def test_pipeline_skip_dead_letters_a_named_record_unread(make_settings):
    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(b"a", text_event("a", "first"), []), (b"b", text_event("b", "second"), [])])
    run_ingest(settings.replace(pipeline={"skip": [f"{settings.kafka.topic}:0:0"]}))
    assert stored_ids(settings) == {"b"} and reasons(settings) == {"skipped": 1}


@pytest.mark.integration
def test_a_replayed_older_version_does_not_overwrite_a_newer_one(make_settings):
    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(b"x", text_event("x", "version one"), []), (b"y", text_event("y", "only version"), [])])
    parked = [f"{settings.kafka.topic}:0:0", f"{settings.kafka.topic}:0:1"]  # both parked
    run_ingest(settings.replace(pipeline={"skip": parked}))
    send_raw(settings, [(b"x", text_event("x", "version two"), [])])
    run_ingest(settings)
    assert dlq.replay(settings).replayed == 2  # x@0 (older than the stored x@2) and y@1 (nothing newer)

    result = run_ingest(settings)

    assert result.points_upserted == 1 and reasons(settings)["superseded"] == 1
    store = open_store(settings.qdrant)
    try:
        points = {p.payload["id"]: p.payload for p in store.scroll()}
    finally:
        store.close()
    assert points["x"]["text"] == "version two" and points["x"]["source"]["offset"] == 2
    assert points["y"]["source"]["offset"] == 1 and points["y"]["source"]["replayed_from"].endswith("/0/4")
    assert dlq.replay(settings).replayed == 1  # the superseded dead letter is new; replaying it is harmless
    run_ingest(settings)
    assert reasons(settings)["superseded"] == 2


@pytest.mark.integration
def test_dead_letters_count_and_replay_once_though_published_twice(make_settings):
    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(None, b"{broken", []), (None, b"{also broken", [])])
    run_ingest(settings)
    reset_group(settings)  # as if killed between publishing the dead letters and committing
    run_ingest(settings)
    assert len(dead_letters(settings)) == 4
    assert dlq.stats(settings) == {"malformed_json": 2}
    report = dlq.replay(settings, to_topic=f"{settings.kafka.topic}.again")
    assert report.replayed == 2 and report.duplicates == 2
    assert dlq.replay(settings, to_topic=f"{settings.kafka.topic}.again").replayed == 0
    assert dlq.replay(settings, to_topic=f"{settings.kafka.topic}.other").replayed == 2  # once per target


@pytest.mark.integration
def test_a_replay_killed_before_its_ledger_entries_does_not_send_again(make_settings):
    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(None, b"{one", []), (None, b"{two", [])])
    run_ingest(settings)
    target = f"{settings.kafka.topic}.fixed"
    assert dlq.replay(settings, ["nothing-matches"], to_topic=target).replayed == 0  # leaves a scan mark
    # What a replay killed -9 after its send and before its ledger entry leaves behind:
    identity = f"{settings.kafka.topic}/0/0"
    producer = KafkaProducer(bootstrap_servers=[settings.kafka.bootstrap_servers])
    producer.send(target, value=b"{one", headers=[("es-replay-id", identity.encode())]).get(timeout=10)
    producer.close()

    report = dlq.replay(settings, to_topic=target)

    assert report.replayed == 1 and report.already_replayed == 1
    assert [r.value for r in read_topic(settings, target)] == [b"{one", b"{two"]


@pytest.mark.unit
def test_the_tracker_splits_only_to_checkpoint():
    tracker = CheckpointOnlyTracker(OffsetRange(0, 1000))
    assert tracker.try_claim(10)
    assert tracker.try_split(0.5) is None  # a runner's rebalancing split: refused
    split = tracker.try_split(0)
    assert split is not None
    primary, residual = split
    assert (primary.stop, residual.start, residual.stop) == (11, 11, 1000)


def committed_claims(settings) -> dict[int, Claim | None]:
    group = owners_group(settings.kafka.group_id)
    client = KafkaConsumer(bootstrap_servers=[settings.kafka.bootstrap_servers], group_id=group)
    try:
        return {
            p: Claim.decode(client.committed(TopicPartition(settings.kafka.topic, p)))
            for p in range(settings.kafka.partitions)
        }
    finally:
        client.close()


@pytest.mark.integration
def test_a_second_live_reader_of_a_partition_is_refused(make_settings):
    settings = make_settings(pipeline={"reader_heartbeat_s": 1.0, "mode": "stream"})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    stop = threading.Event()
    first = threading.Thread(target=run_ingest, args=(settings,), kwargs={"stop": stop})
    first.start()
    try:
        deadline = time.monotonic() + 60
        while not all(c is not None and c.beat > 0 for c in committed_claims(settings).values()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        second = settings.replace(pipeline={"mode": "drain"})
        with pytest.raises(PartitionOwnedError, match="--shard"):
            run_ingest(second)
    finally:
        stop.set()
        first.join(60)
    assert not first.is_alive()
    assert all(c is not None and c.beat == 0 for c in committed_claims(settings).values())  # released at stop


@pytest.mark.integration
def test_a_dead_readers_claim_is_taken_over(make_settings):
    settings = make_settings(kafka={"partitions": 1}, pipeline={"reader_heartbeat_s": 0.5})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(b"a", text_event("a", "left by a reader that was killed"), [])])
    group = owners_group(settings.kafka.group_id)
    client = KafkaConsumer(bootstrap_servers=[settings.kafka.bootstrap_servers], group_id=group)
    ghost = Claim.of("ghost:1:dead", time.time()).encode()  # beat fresh, but it will never move again
    client.commit({TopicPartition(settings.kafka.topic, 0): OffsetAndMetadata(ghost, "", -1)})
    client.close()
    assert run_ingest(settings).points_upserted == 1


@pytest.mark.integration
def test_a_run_that_fails_after_claiming_releases_its_partitions(make_settings, monkeypatch, caplog):
    """A start that fails once it holds its claims (as Beam 2.78 refusing a DoFn's hints did) must not make the
    next run wait out the lease: the claims are zeroed on the way out, and the failure itself still shows."""
    settings = make_settings(kafka={"partitions": 2}, pipeline={"reader_heartbeat_s": 5.0})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(b"a", text_event("a", "waiting for a run that starts"), [])])

    def refused(*args, **kwargs):
        raise ValueError("Return value not iterable: Deliver: <class 'NoneType'> is not iterable")

    monkeypatch.setattr(ingest, "build_pipeline", refused)
    with pytest.raises(ValueError, match="not iterable"):
        run_ingest(settings)
    assert all(c is not None and c.beat == 0 for c in committed_claims(settings).values())
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="embedstream.pipelines.io.partition_owner"):
        assert run_ingest(settings).points_upserted == 1
    assert "claimed by another reader lately" not in caplog.text


@pytest.mark.integration
def test_latest_reset_commits_its_start_before_reading(make_settings):
    settings = make_settings(kafka={"partitions": 1, "auto_offset_reset": "latest"})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(b"old", text_event("old", "before the first start"), [])])
    plan_partitions(settings.kafka, 1 << 20, bounded=False, owner="crashed:1:run", heartbeat_s=0.5)  # then kill -9
    send_raw(settings, [(b"new", text_event("new", "while the reader was down"), [])])
    time.sleep(1.6)  # the crashed run's claim has stopped beating
    run_ingest(settings)
    assert stored_ids(settings) == {"new"}


@pytest.mark.integration
def test_a_stop_set_before_the_pipeline_starts_is_not_lost(make_settings):
    settings = make_settings(pipeline={"mode": "stream"})
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    run_ingest(settings, stop=stop)
    assert time.monotonic() - started < 60


@pytest.mark.integration
def test_a_reader_whose_partition_was_claimed_since_stops_instead_of_committing(make_settings):
    settings = make_settings(kafka={"partitions": 1}, pipeline={"reader_heartbeat_s": 0.5, "mode": "stream"})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_ingest(settings)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=run)
    reader.start()
    deadline = time.monotonic() + 60
    while (claim := committed_claims(settings)[0]) is None or claim.beat == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    client = KafkaConsumer(
        bootstrap_servers=[settings.kafka.bootstrap_servers], group_id=owners_group(settings.kafka.group_id)
    )
    taker = Claim.of("taker:2:new", time.time())
    client.commit({TopicPartition(settings.kafka.topic, 0): OffsetAndMetadata(taker.encode(), "", -1)})
    client.close()
    send_raw(settings, [(b"late", text_event("late", "read by a fenced reader"), [])])
    reader.join(60)
    assert not reader.is_alive()
    assert errors and isinstance(errors[0], PartitionOwnedError), errors
    assert committed_offsets(settings.kafka)[0] == 0  # it did not commit past the takeover
    assert committed_claims(settings)[0] == taker


@pytest.mark.integration
def test_a_dead_letter_of_a_record_with_neither_key_nor_value_is_published(make_settings):
    """Kafka clients cannot send such a record; other producers can, and its dead letter must still go out."""
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.dead_letter_topic])
    publisher = DeadLetterPublisher(settings.kafka, settings.pipeline)
    try:
        publisher.publish(
            DeadLetter.of(KafkaRecord(topic="t", partition=0, offset=7), Reason.MALFORMED_JSON, "no value", "parse")
        )
        (sent,) = publisher.confirm()
    finally:
        publisher.close()
    (letter,) = dead_letters(settings)
    assert letter.key is None and letter.value == b"" and dict(letter.headers)["es-dlq-null-value"] == b"1"
    assert sent.identity == "t/0/7" and DeadLetter.context_of(letter.headers)["offset"] == "7"


@pytest.mark.integration
def test_a_replay_records_only_what_the_broker_took_and_sends_the_rest_next_time(make_settings, monkeypatch):
    settings = make_settings(kafka={"partitions": 1}, pipeline={"max_event_bytes": 1000})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    huge = json.dumps({"schema": 1, "id": "huge", "modality": "text", "text": "y" * 2_500_000}).encode()
    send_raw(settings, [(None, b"{broken", []), (b"huge", huge, []), (None, b"{also broken", [])])
    run_ingest(settings)
    target = f"{settings.kafka.topic}.fixed"
    monkeypatch.setattr(dlq, "REPLAY_REQUEST_BYTES", 0)  # this client now refuses the 2.5 MB event

    with pytest.raises(dlq.ReplayError, match="1 of 3 replayed events were not acknowledged"):
        dlq.replay(settings, to_topic=target)

    assert sorted(r.value for r in read_topic(settings, target)) == [b"{also broken", b"{broken"]
    monkeypatch.setattr(dlq, "REPLAY_REQUEST_BYTES", 16 << 20)
    again = dlq.replay(settings, to_topic=target)
    assert again.replayed == 1 and again.already_replayed == 2
    assert len(read_topic(settings, target)) == 3


@pytest.mark.integration
def test_a_text_the_tokenizer_refuses_costs_that_text_alone(make_settings):
    """Validation now stops lone surrogates first; should any other text break the tokenizer, the window is
    tokenized again text by text and only that text becomes a dead letter, in its place in arrival order."""
    settings = make_settings()
    embed = Embed(TextAdapter(settings.model, settings.pipeline))
    embed.setup()
    embed.start_bundle()
    texts = ["a fine sentence", "bad \ud800 text", "another fine one"]
    events = [
        ParsedEvent(
            Envelope.model_construct(schema_version=1, id=f"t{i}", modality=Modality.TEXT, text=text, metadata={}),
            KafkaRecord(topic="t", partition=0, offset=i, value=b"{}"),
        )
        for i, text in enumerate(texts)
    ]
    assert [out for event in events for out in embed.process(event)] == []  # held: the window is not full
    outputs = [windowed.value for windowed in embed.finish_bundle()]
    assert [type(out) for out in outputs] == [PointRecord, DeadLetter, PointRecord]
    assert outputs[1].reason == Reason.ENCODE_FAILED and "tokenizer" in outputs[1].message
    assert [out.payload["text"] for out in (outputs[0], outputs[2])] == [texts[0], texts[2]]


@pytest.mark.unit
def test_a_point_whose_payload_cannot_be_built_costs_that_event_alone():
    """Validation stops what is known to break payloads; should anything else get through, building its point
    raises for that event only and it becomes a stage_failed dead letter."""
    record = KafkaRecord(topic="t", partition=0, offset=3, value=b"{}")
    broken = Envelope.model_construct(schema_version=1, id="x", modality=Modality.TEXT, text="bad \ud800", metadata={})
    fine = Envelope.model_validate({"schema": 1, "id": "y", "modality": "text", "text": "fine"})
    vector = {"minilm": np.ones(3, np.float32)}
    letter = point_or_dead(ParsedEvent(broken, record), vector, {"minilm": "minilm@1"})
    point = point_or_dead(ParsedEvent(fine, record), vector, {"minilm": "minilm@1"})
    assert isinstance(letter, DeadLetter) and letter.reason == "stage_failed" and letter.stage == "payload"
    assert isinstance(point, PointRecord) and point.payload["text"] == "fine"
