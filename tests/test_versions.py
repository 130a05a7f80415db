"""Newest version wins, always (docs/reliability.md "Ordering"): the five ways it failed before, on real parts.

Each case runs the real chain (tansu → Beam → minilm → a real store) and asserts what the store holds after: the
newest version of each id, or nothing when its newest event is a delete.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.io.partition_owner import Claim, owners_group
from embedstream.pipelines.io.point_writer import PointWriter
from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.pipelines.stores.edge import EdgeStore
from embedstream.schemas.dead_letter import DeadLetter
from embedstream.schemas.envelope import Deletion
from embedstream.schemas.point import CHUNK_MODALITY, PointRecord, SourceRef, point_id
from embedstream.schemas.version import Version
from embedstream.workers import dlq
from tests.helpers import read_topic, reset_group, send_raw, settings_env, text_event, watermarks
from tests.long_documents import document
from tests.video_members import fusion, member

pytestmark = [pytest.mark.brokers("tansu", "kafka"), pytest.mark.integration]

BACKENDS = ["edge", "local"]  # qdrant-edge's condition and qdrant-client's update_filter


def held(settings) -> dict[str, dict]:
    """Event id → payload of every live point that is not a chunk."""
    store = open_store(settings.qdrant)
    try:
        return {p.payload["id"]: p.payload for p in store.scroll() if p.payload["modality"] != CHUNK_MODALITY}
    finally:
        store.close()


def chunks_of(settings, doc: str) -> list[dict]:
    store = open_store(settings.qdrant)
    try:
        return [p.payload for p in store.scroll(where={"doc_id": doc, "modality": CHUNK_MODALITY})]
    finally:
        store.close()


def reasons(settings) -> Counter:
    letters = read_topic(settings, settings.kafka.dead_letter_topic)
    return Counter(DeadLetter.context_of(r.headers)["reason"] for r in letters)


def skip(settings, *offsets: int) -> list[str]:
    return [f"{settings.kafka.topic}:0:{offset}" for offset in offsets]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_replayed_old_version_loses_to_a_newer_one_in_the_same_batch(make_settings, backend):
    settings = make_settings(kafka={"partitions": 1}, qdrant={"backend": backend})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"x", text_event("x", "version one"), [])])
    run_ingest(settings.replace(pipeline={"skip": skip(settings, 0)}))  # x v1 parked in the dead-letter topic
    send_raw(settings, [(b"x", text_event("x", "version two"), [])])  # produced, not yet ingested
    assert dlq.replay(settings).replayed == 1
    run_ingest(settings)  # v2 and the replay of v1 in one drain, one batch
    assert held(settings)["x"]["text"] == "version two"
    assert reasons(settings)["superseded"] == 1  # the replay is told why it changed nothing


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_replayed_delete_does_not_remove_a_newer_version(make_settings, backend):
    settings = make_settings(kafka={"partitions": 1}, qdrant={"backend": backend})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    delete = json.dumps({"schema": 1, "id": "x", "modality": "text", "op": "delete"}).encode()
    send_raw(
        settings,
        [(b"x", text_event("x", "version one"), []), (b"x", delete, []), (b"x", text_event("x", "version two"), [])],
    )
    run_ingest(settings.replace(pipeline={"skip": skip(settings, 1)}))
    assert held(settings)["x"]["text"] == "version two"
    assert dlq.replay(settings).replayed == 1
    run_ingest(settings)
    assert held(settings)["x"]["text"] == "version two"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_superseded_long_document_writes_none_of_its_chunks(make_settings, backend):
    settings = make_settings(
        kafka={"partitions": 1},
        qdrant={"backend": backend},
        pipeline={"upsert_batch_size": 4},  # the old version's chunks would fill batches before its document point
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"d", text_event("d", document(2400, seed=11)), [])])
    run_ingest(settings.replace(pipeline={"skip": skip(settings, 0)}))
    send_raw(settings, [(b"d", text_event("d", "The short new version."), [])])
    run_ingest(settings)
    assert dlq.replay(settings).replayed == 1
    run_ingest(settings)
    assert held(settings)["d"]["text"] == "The short new version." and chunks_of(settings, "d") == []
    assert reasons(settings)["superseded"] == 1


def send_at(settings, partition: int, key: bytes, value: bytes | None, timestamp_ms: int) -> None:
    producer = KafkaProducer(bootstrap_servers=[settings.kafka.bootstrap_servers])
    producer.send(settings.kafka.topic, key=key, value=value, partition=partition, timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def test_across_partitions_the_newer_version_wins_whichever_partition_is_read_last(make_settings):
    """After partitions are added one id's events land in two partitions; the order the shards run in must not
    matter: timestamps decide, and a declared ``version`` decides over timestamps."""
    settings = make_settings(kafka={"partitions": 2})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    now = int(time.time() * 1000)
    send_at(settings, 1, b"x", text_event("x", "newer, in partition one"), now)
    send_at(settings, 0, b"x", text_event("x", "older, in partition zero"), now - 60_000)
    send_at(settings, 0, b"v", text_event("v", "declared 7", version=7), now)  # newer record, older version
    send_at(settings, 1, b"v", text_event("v", "declared 9", version=9), now - 60_000)
    send_at(settings, 0, b"z", text_event("z", "made, then deleted later"), now - 60_000)
    send_at(settings, 1, b"z", None, now)  # a Kafka tombstone, newer, in the other partition
    run_ingest(settings.replace(pipeline={"shard": "1/2"}))  # the newer ones first
    run_ingest(settings.replace(pipeline={"shard": "0/2"}))  # then the older ones: they must lose
    points = held(settings)
    assert points["x"]["text"] == "newer, in partition one"
    assert points["v"]["text"] == "declared 9" and points["v"]["ver"] == 9
    assert "z" not in points


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_delete_leaves_a_tombstone_nothing_reads_and_retention_compacts_it(make_settings, backend):
    settings = make_settings(kafka={"partitions": 1}, qdrant={"backend": backend})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(b"x", text_event("x", "to be deleted"), []), (b"x", None, [])])
    run_ingest(settings)
    store = open_store(settings.qdrant)
    try:
        pid = point_id("text", "x")
        (marker,) = store.retrieve([pid], tombstones=True)
        assert marker.payload["modality"] == "tombstone" and marker.vectors == {}
        assert store.retrieve([pid]) == [] and list(store.scroll()) == [] and store.count() == 0
        assert store.search("minilm", [1.0] + [0.0] * 383, limit=5) == []
    finally:
        store.close()
    send_raw(settings, [(b"y", text_event("y", "a later bundle compacts what is past retention"), [])])
    run_ingest(settings.replace(pipeline={"tombstone_retention_s": 0}))
    store = open_store(settings.qdrant)
    try:
        assert store.retrieve([point_id("text", "x")], tombstones=True) == []
        assert {p.payload["id"] for p in store.scroll()} == {"y"}
    finally:
        store.close()


def claims(settings) -> dict[int, Claim | None]:
    client = KafkaConsumer(
        bootstrap_servers=[settings.kafka.bootstrap_servers], group_id=owners_group(settings.kafka.group_id)
    )
    try:
        tps = [TopicPartition(settings.kafka.topic, p) for p in range(settings.kafka.partitions)]
        return {tp.partition: Claim.decode(client.committed(tp)) for tp in tps}
    finally:
        client.close()


def test_a_stalled_reader_cannot_write_over_the_reader_that_took_its_partition(make_settings, tmp_path):
    """Reader A is paused (SIGSTOP) once it holds its partition; X is deleted; reader B takes the partition over
    and drains it to the end; A resumes. A must not bring X back, nor move the group's offset."""
    settings = make_settings(kafka={"partitions": 1}, pipeline={"reader_heartbeat_s": 0.5})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    filler = [(f"f{i}".encode(), text_event(f"f{i}", f"filler sentence number {i}"), []) for i in range(300)]
    send_raw(settings, [(b"x", text_event("x", "version one"), []), *filler])
    log = tmp_path / "reader-a.log"
    with open(log, "wb") as out:
        reader_a = subprocess.Popen(
            [sys.executable, "-m", "embedstream.workers.cli", "ingest", "--mode", "drain"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while (claim := claims(settings)[0]) is None or claim.beat == 0:
            assert reader_a.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.kill(reader_a.pid, signal.SIGSTOP)
        send_raw(settings, [(b"x", None, [])])
        run_ingest(settings)  # B: waits out A's lease, takes the partition, drains to the end
        assert "x" not in held(settings)
        end = watermarks(settings)
        assert committed_offsets(settings.kafka) == end
        os.kill(reader_a.pid, signal.SIGCONT)
        reader_a.wait(timeout=120)
    finally:
        if reader_a.poll() is None:
            os.kill(reader_a.pid, signal.SIGCONT)
            reader_a.kill()
    output = log.read_text()
    assert reader_a.returncode != 0 and "being read by another ingest" in output, output
    assert "x" not in held(settings) and len(held(settings)) == 300
    assert committed_offsets(settings.kafka) == end


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_histories_converge_to_the_newest_version_of_each_id(make_settings, seed):
    """Model-based: a generated history — creates, updates, deletes (``op: delete`` and Kafka tombstones), short
    texts and documents that grow and shrink, every event in a random partition and in a random order, records
    sent twice, records parked in the dead-letter topic and replayed later, shards ingested in a random order,
    and a re-ingest from offset 0 — through the real chain. The store must hold, for each id, its newest version,
    or nothing when that is a delete."""
    rng = random.Random(seed)
    settings = make_settings(kafka={"partitions": 3}, pipeline={"upsert_batch_size": 3})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    texts = [document(700, seed=seed * 10 + i) for i in range(2)] + [f"short text {i} of seed {seed}" for i in range(4)]
    history: list[tuple[str, int, str | None, bytes | None]] = []  # id, version, text (None: delete), value
    for n in range(5):
        event_id = f"id{n}"
        for version in rng.sample(range(1, 50), rng.randint(1, 4)):
            kind = rng.random()
            if kind < 0.2:
                history.append((event_id, version, None, None))  # a Kafka tombstone
            elif kind < 0.35:
                delete = {"schema": 1, "id": event_id, "modality": "text", "op": "delete", "version": version}
                history.append((event_id, version, None, json.dumps(delete).encode()))
            else:
                text = rng.choice(texts)
                history.append((event_id, version, text, text_event(event_id, text, version=version)))
    rng.shuffle(history)
    history += rng.sample(history, 3)  # records sent twice
    producer = KafkaProducer(bootstrap_servers=[settings.kafka.bootstrap_servers])
    base_ms = int(time.time() * 1000) - 10_000_000
    placed = []  # (partition, offset) of each record
    for event_id, version, _, value in history:
        # A Kafka tombstone carries its declared version in its one header; the events, in their envelopes.
        headers = [("es-version", str(version).encode())] if value is None else []
        sent = producer.send(
            settings.kafka.topic,
            key=event_id.encode(),
            value=value,
            partition=rng.randrange(3),
            timestamp_ms=base_ms,
            headers=headers,
        ).get(timeout=30)
        placed.append((sent.partition, sent.offset))
    producer.flush()
    producer.close()
    parked = [f"{settings.kafka.topic}:{p}:{o}" for p, o in rng.sample(placed, 3)]

    run_ingest(settings.replace(pipeline={"skip": parked}))  # some records parked, the rest ingested
    dlq.replay(settings)
    for shard in rng.sample(["0/3", "1/3", "2/3"], 3):  # the replays, shard by shard in a random order
        run_ingest(settings.replace(pipeline={"shard": shard}))
    expected = expected_store(history)
    assert observed_store(settings) == expected
    reset_group(settings)  # a re-ingest from offset 0 changes nothing
    run_ingest(settings)
    assert observed_store(settings) == expected


def expected_store(history: list[tuple[str, int, str | None, bytes | None]]) -> dict[str, str]:
    """Each id's newest event (by declared version): its text, or none for a delete."""
    newest: dict[str, tuple[int, str | None]] = {}
    for event_id, version, text, _ in history:
        if event_id not in newest or version > newest[event_id][0]:
            newest[event_id] = (version, text)
    return {event_id: text for event_id, (_, text) in newest.items() if text is not None}


def observed_store(settings) -> dict[str, str]:
    """Each stored id's text, checked whole: a document's chunks are exactly its own version's, no more."""
    store = open_store(settings.qdrant)
    try:
        points = list(store.scroll())
    finally:
        store.close()
    texts = {p.payload["id"]: p.payload for p in points if p.payload["modality"] == "text"}
    for event_id, payload in texts.items():
        chunks = [
            p.payload for p in points if p.payload.get("doc_id") == event_id and p.payload["modality"] == CHUNK_MODALITY
        ]
        assert len(chunks) == (payload.get("chunks") or 0), (event_id, len(chunks), payload.get("chunks"))
        assert all(c["ver"] == payload["ver"] for c in chunks)
    orphans = {p.payload["doc_id"] for p in points if p.payload["modality"] == CHUNK_MODALITY} - set(texts)
    assert not orphans
    return {event_id: payload["text"] for event_id, payload in texts.items()}


# --- videos: members, views and video_end against whole-video deletes, on the real writer and an edge store ---


def versioned(point, major: int):
    """``point`` as written by the event of that version (origin offset = major, so ties never decide)."""
    return point.model_copy(update={"payload": {**point.payload, **Version(major, major).fields()}})


def bundle(writer, *steps) -> None:
    """One bundle: each step a point to add or a (Deletion, version) to apply."""
    writer.start()
    for step in steps:
        if isinstance(step, tuple):
            deletion, major = step
            writer.delete(deletion, SourceRef(topic="t", partition=0, offset=major), Version(major, major))
        else:
            writer.add(step)
    writer.flush()


def video_state(store, video: str) -> tuple[dict | None, dict[int, int]]:
    """The view's payload (None: no live view) and each stored frame's version."""
    views = store.retrieve([point_id("video", video)])
    frames = {
        int(p.payload["video"]["index"]): int(p.payload["ver"])
        for p in store.scroll(where={"video_id": video})
        if p.payload["modality"] == "video_frame"
    }
    return (views[0].payload if views else None), frames


def test_a_stale_whole_video_delete_keeps_the_newer_members_and_their_view(edge_store):
    writer = PointWriter(edge_store, 10, fusion(), lambda n: None)
    bundle(writer, versioned(member("v", "video_frame", 0, [1.0, 0, 0]), 10))
    bundle(writer, versioned(member("v", "video_frame", 1, [0, 1.0, 0]), 20))
    bundle(writer, (Deletion("v"), 5))  # older than both frames: a replay, or another partition's
    view, frames = video_state(edge_store, "v")
    assert frames == {0: 10, 1: 20} and view is not None and view["frames"] == 2


def test_a_video_deleted_stays_deleted_against_older_members_deletes_and_video_ends(edge_store):
    writer = PointWriter(edge_store, 10, fusion(), lambda n: None)
    bundle(writer, versioned(member("w", "video_frame", 0, [1.0, 0, 0]), 10), (Deletion("w"), 30))
    assert video_state(edge_store, "w") == (None, {})
    bundle(writer, versioned(member("w", "video_frame", 1, [0, 1.0, 0]), 40))  # re-created after the delete
    view, frames = video_state(edge_store, "w")
    assert frames == {1: 40} and view is not None and view["ver"] == 30  # the view keeps the delete's version
    bundle(writer, (Deletion("w"), 5))  # a stale delete: must not replace the view nor lower its floor
    bundle(writer, versioned(member("w", "video_frame", 2, [0, 0, 1.0]), 25))  # older than the delete at 30
    view, frames = video_state(edge_store, "w")
    assert frames == {1: 40} and view is not None and view["frames"] == 1
    writer.start()
    writer.video_ended("x", Version(1, 1))
    writer.flush()
    bundle(writer, versioned(member("x", "video_frame", 0, [1.0, 0, 0]), 10), (Deletion("x"), 30))
    writer.start()
    writer.video_ended("x", Version(20, 20))  # the video_end of the deleted version, arriving late
    writer.flush()
    assert video_state(edge_store, "x") == (None, {})


def test_a_view_counts_only_the_member_versions_the_store_keeps(edge_store):
    writer = PointWriter(edge_store, 1, fusion(), lambda n: None)  # batches of one: v5 is checked after v10 landed
    bundle(
        writer,
        versioned(member("u", "video_frame", 0, [1.0, 0, 0], version="new"), 10),
        versioned(member("u", "video_frame", 0, [0, 0, 1.0], version="old"), 5),
    )
    view = edge_store.retrieve([point_id("video", "u")], with_vectors=True)[0]
    np.testing.assert_allclose(view.vectors["img"], [1.0, 0, 0], atol=1e-6)


def test_a_long_document_replaced_by_a_short_one_in_its_bundle_leaves_no_chunk(tmp_path):
    """Batches of four: the long version's first chunks are written in a batch of their own, then its last
    chunk and document point are dropped for the newer short version; those written chunks must go too."""
    store = EdgeStore(str(tmp_path), "docs")
    store.ensure_spaces([SpaceSpec("t", 3, "t@1")])
    try:
        writer = PointWriter(store, 4, None, lambda n: None)

        def point(modality: str, text: str, major: int, index: int | None = None, chunks: int = 0):
            payload = {"modality": modality, "id": "d", "text": text, **Version(major, major).fields()}
            if modality == CHUNK_MODALITY:
                payload |= {"doc_id": "d", "chunk": index, "chunks": chunks}
            elif chunks:
                payload |= {"doc_id": "d", "chunks": chunks}
            pid = point_id(modality, "d", index=index)
            return PointRecord(
                id=pid,
                vectors={"t": [1.0, 0, 0]},
                payload=payload,
                source=SourceRef(topic="t", partition=0, offset=major),
            )

        long_version = [point(CHUNK_MODALITY, f"part {i}", 5, i, 5) for i in range(5)] + [
            point("text", "long", 5, chunks=5)
        ]
        bundle(writer, *long_version, point("text", "short", 9))
        left = [(p.payload["modality"], p.payload["ver"]) for p in store.scroll()]
        assert left == [("text", 9)]
    finally:
        store.close()
