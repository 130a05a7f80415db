"""The embeddings topic (``pipeline.output_topic``): every point written and every delete applied, on a Kafka topic
that a plain consumer, ``tail-embeddings`` and Qdrant's Kafka Connect sink can rebuild the store from."""

from __future__ import annotations

import json
import signal
import struct
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, TopicPartition
from qdrant_client import QdrantClient, models

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import StoredPoint, open_store
from embedstream.schemas.embeddings_wire import EmbeddingRecord, WireFormatError, decode, encode, headers_of
from embedstream.schemas.errors import SettingsError
from embedstream.schemas.settings import Settings
from embedstream.schemas.version import Version
from embedstream.workers.demo import sample_corpus
from embedstream.workers.tail_embeddings import latest
from tests.helpers import (
    Message,
    delete_event,
    embedstream,
    send_raw,
    settings_env,
    start_stream_ingest,
    text_event,
    wait_for,
    watermarks,
)
from tests.tcp_proxy import TcpProxy

LONG = " ".join(sample_corpus().read_text().splitlines()[:60])  # several passages, many sentences


@pytest.mark.unit
def test_both_forms_carry_a_point_bit_for_bit_and_a_delete_is_a_tombstone():
    vector = np.random.default_rng(7).standard_normal(384).astype(np.float32).tolist()
    point = EmbeddingRecord(
        "5f0c3d1e-0000-5000-8000-000000000001",
        "embeddings",
        {"text": vector},
        {"bm25": ([3, 17, 4096], [1.0, 2.0, 0.5])},
        {"id": "doc-ü", "text": "naïve café ☕", "ver": 12, "ver_tie": 5},
        Version(12, 5),
    )
    for fmt in ("qdrant", "binary"):
        headers = headers_of(point.version, fmt)
        value = encode(point, fmt)
        assert decode(point.id.encode(), value, headers) == point
    body = json.loads(encode(point, "qdrant"))  # the message Qdrant's sink reads
    assert set(body) == {"collection_name", "id", "vector", "payload"}
    assert body["vector"]["bm25"] == {"indices": [3, 17, 4096], "values": [1.0, 2.0, 0.5]}
    assert len(encode(point, "binary")) < len(encode(point, "qdrant")) / 2
    gone = decode(point.id.encode(), None, headers_of(Version(13, 0), "qdrant"))
    assert gone == EmbeddingRecord(point.id, version=Version(13, 0), deleted=True)
    with pytest.raises(WireFormatError):
        decode(b"k", b"ESV1\xff\xff\xff\xff{}")
    with pytest.raises(WireFormatError):
        decode(b"k", b'{"id": 1}')
    newest = latest([point, gone, EmbeddingRecord("b", version=Version(1, 0), deleted=True)])
    assert newest == {}, "a newer delete removes the point"
    assert latest([gone, point]) == {}, "an older write arriving after a delete does not bring the point back"


@pytest.mark.unit
def test_the_output_topic_may_not_be_one_the_ingest_reads():
    with pytest.raises(SettingsError, match="output_topic"):
        Settings.load(kafka={"topic": "events"}, pipeline={"output_topic": "events"})
    with pytest.raises(SettingsError, match="output_topic"):
        Settings.load(kafka={"topic_pattern": "ev.*"}, pipeline={"output_topic": "ev.vectors"})


def _events() -> list[Message]:
    """A long document, 120 sentences, a newer version of one, a delete and a tombstone; then (the last event) the
    document shrinks to one passage."""
    lines = sample_corpus().read_text().splitlines()
    events: list[Message] = [(b"doc-long", text_event("doc-long", LONG), [])]
    events += [(f"s{i}".encode(), text_event(f"s{i}", lines[i]), []) for i in range(120)]
    events += [(b"s7", text_event("s7", "the seventh sentence, written again"), [])]  # a newer version wins
    events += [(b"s5", delete_event("s5"), []), (b"s6", None, [])]  # a delete and a Kafka tombstone
    events += [(b"doc-long", text_event("doc-long", lines[200]), [])]
    return events


def _plain_read(settings: Settings, topic: str | None) -> list:
    """Every record of ``topic`` with a plain kafka-python consumer, in each partition's order."""
    assert topic is not None
    reader = KafkaConsumer(bootstrap_servers=[settings.kafka.bootstrap_servers], enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic)]
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        ends = reader.end_offsets(partitions)
        records: list = []
        deadline = time.monotonic() + 60
        while any(reader.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, "the topic could not be read to its end"
            for batch in reader.poll(timeout_ms=500).values():
                records += batch
        return records
    finally:
        reader.close()


def _rebuilt(records: list, fmt: str) -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    """What a compacted topic keeps — each key's last record, whatever its version — decoded without embedstream's
    decoder (JSON by hand, binary by its layout); deletes dropped. A key's versions never go down on the topic."""
    state: dict[str, tuple[tuple[int, int], dict | None]] = {}
    for record in records:
        headers = dict(record.headers)
        assert headers["es-format"] == fmt.encode()
        version = (int(headers["es-ver"]), int(headers["es-ver-tie"]))
        held = state.get(record.key.decode())
        assert held is None or held[0] <= version, f"{record.key!r}: version {version} after {held[0]}"
        if record.value is None:
            state[record.key.decode()] = (version, None)
        elif fmt == "qdrant":
            body = json.loads(record.value)
            assert body["id"] == record.key.decode() and body["collection_name"]
            vectors = {n: np.asarray(v, np.float32) for n, v in body["vector"].items() if isinstance(v, list)}
            state[record.key.decode()] = (version, {"vectors": vectors, "payload": body["payload"]})
        else:
            assert record.value[:4] == b"ESV1"
            (length,) = struct.unpack_from("<I", record.value, 4)
            header = json.loads(record.value[8 : 8 + length])
            at, vectors = 8 + length, {}
            for name, dim in header["dense"]:
                vectors[name] = np.frombuffer(record.value, "<f4", dim, at)
                at += 4 * dim
            state[record.key.decode()] = (version, {"vectors": vectors, "payload": header["payload"]})
    return {pid: (s["vectors"], s["payload"]) for pid, (_, s) in state.items() if s is not None}


def _stored(settings: Settings) -> dict[str, StoredPoint]:
    store = open_store(settings.qdrant)
    try:
        return {p.id: p for p in store.scroll(with_vectors=True)}
    finally:
        store.close()


def _assert_same_as_the_store(settings: Settings, fmt: str) -> list:
    records = _plain_read(settings, settings.pipeline.output_topic)
    rebuilt, stored = _rebuilt(records, fmt), _stored(settings)
    assert rebuilt.keys() == stored.keys()
    for pid, point in stored.items():
        vectors, payload = rebuilt[pid]
        assert vectors.keys() == point.vectors.keys(), pid
        for name, vector in point.vectors.items():
            assert np.array_equal(vectors[name], np.asarray(vector, np.float32)), (pid, name)
        assert payload == point.payload, pid
    return records


@pytest.mark.integration
@pytest.mark.brokers("tansu", "kafka")  # Apache Kafka: a compacted topic really refuses unkeyed records
@pytest.mark.parametrize("fmt", ["qdrant", "binary"])
def test_a_consumer_rebuilds_the_store_from_the_topic_deletes_and_shrunk_documents_included(make_settings, fmt):
    settings = make_settings(pipeline={"output_format": fmt, "max_records_per_bundle": 32})
    settings = settings.replace(pipeline={"output_topic": f"{settings.kafka.topic}.vectors"})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, _events())
    result = run_ingest(settings)
    assert result.points_upserted > 120

    records = _assert_same_as_the_store(settings, fmt)
    stored = _stored(settings)
    texts = {p.payload.get("id"): p for p in stored.values() if p.payload.get("modality") == "text"}
    assert "s5" not in texts and "s6" not in texts and texts["s7"].payload["text"].startswith("the seventh")
    deleted = {r.key.decode() for r in records if r.value is None}
    chunks = {r.key.decode() for r in records if r.value is not None and b"text_chunk" in r.value}
    assert chunks and chunks <= deleted, "each chunk the shrunk document dropped is deleted on the topic too"
    assert len(deleted - chunks) >= 2, "the delete and the tombstone"
    assert not any(p.payload.get("doc_id") == "doc-long" for p in stored.values()), "the short version has no chunks"
    assert committed_offsets(settings.kafka) == watermarks(settings)

    run_ingest(settings.replace(kafka={"group_id": f"{settings.kafka.group_id}.again"}))  # a replay from offset 0
    _assert_same_as_the_store(settings, fmt)  # duplicates carry the same key and version: the same state

    if fmt == "qdrant":  # what Qdrant's Kafka Connect sink does with each message: an upsert of its point
        client = QdrantClient(":memory:")
        named = json.loads(next(r.value for r in records if r.value is not None))["vector"]
        client.create_collection(  # the collection a user creates first, as the sink's README says
            "copy",
            vectors_config={
                n: models.VectorParams(size=len(v), distance=models.Distance.COSINE)
                for n, v in named.items()
                if isinstance(v, list)
            },
            sparse_vectors_config={
                n: models.SparseVectorParams(modifier=models.Modifier.IDF)
                for n, v in named.items()
                if isinstance(v, dict)
            },
        )
        for record in records:
            if record.value is not None:
                body = json.loads(record.value)
                client.upsert(
                    "copy", [models.PointStruct(id=body["id"], vector=body["vector"], payload=body["payload"])]
                )
            else:  # the sink skips tombstones; a consumer that honours them deletes
                client.delete("copy", models.PointIdsList(points=[record.key.decode()]))
        copied = {str(p.id): p for p in client.scroll("copy", limit=10_000, with_vectors=True)[0]}
        assert copied.keys() == stored.keys()
        for pid, point in stored.items():
            named = copied[pid].vector
            assert isinstance(named, dict)
            for name, vector in point.vectors.items():
                assert np.allclose(np.asarray(named[name], np.float32), vector, atol=1e-6), (pid, name)


@pytest.mark.integration
def test_tail_embeddings_prints_each_points_newest_state_as_jsonl_and_parquet(make_settings, tmp_path):
    settings = make_settings(pipeline={"output_format": "binary"})
    settings = settings.replace(pipeline={"output_topic": f"{settings.kafka.topic}.vectors"})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, _events())
    run_ingest(settings)
    env = settings_env(settings)

    newest = embedstream("tail-embeddings", "--latest", "--out", str(tmp_path / "points.jsonl"), env=env)
    assert newest.returncode == 0, newest.stderr
    rows = [json.loads(line) for line in (tmp_path / "points.jsonl").read_text().splitlines()]
    stored = _stored(settings)
    assert {r["id"] for r in rows} == stored.keys()
    one = next(r for r in rows if r["payload"].get("id") == "s7")
    assert one["vectors"].keys() == stored[one["id"]].vectors.keys() and one["sparse"]["bm25"]["indices"]
    for name, vector in one["vectors"].items():
        assert np.array_equal(np.asarray(vector, np.float32), np.asarray(stored[one["id"]].vectors[name], np.float32))

    every = embedstream("tail-embeddings", "--out", str(tmp_path / "all.parquet"), env=env)
    assert every.returncode == 0, every.stderr
    table = pq.read_table(tmp_path / "all.parquet").to_pylist()
    assert len(table) == len(_plain_read(settings, settings.pipeline.output_topic))
    assert sum(r["deleted"] for r in table) >= 2

    first = embedstream("tail-embeddings", "-k", "3", env=env)
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 3
    wrong = embedstream("tail-embeddings", "--out", str(tmp_path / "x.csv"), env=env)
    assert wrong.returncode == 2 and ".jsonl or .parquet" in wrong.stderr


@pytest.mark.integration
def test_kill_9_between_the_store_write_and_the_commit_loses_no_record(make_settings, proxied_broker, tmp_path):
    """A first run publishes a long document's chunks; then the document shrinks while the broker refuses every
    Produce request: nothing is committed, kill -9. A rerun with the broker healed must still publish the dropped
    chunks' deletes, though the store may have removed them before the kill."""
    proxy: TcpProxy = proxied_broker
    settings = make_settings(kafka={"bootstrap_servers": f"127.0.0.1:{proxy.port}", "partitions": 1})
    settings = settings.replace(pipeline={"output_topic": f"{settings.kafka.topic}.vectors"})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    ensure_topics(settings.kafka, [settings.pipeline.output_topic], compacted=True)
    *first, shrink = _events()
    send_raw(settings, first)
    assert embedstream("ingest", env=settings_env(settings), timeout=300).returncode == 0
    published = {r.key for r in _plain_read(settings, settings.pipeline.output_topic)}
    send_raw(settings, [shrink, (b"s-new", text_event("s-new", "one more sentence after the first run"), [])])
    proxy.refuse_produce = True
    log_path = tmp_path / "stream.log"
    ingest = start_stream_ingest(settings, log_path)
    try:
        assert wait_for(lambda: proxy.refused >= 3, 180), log_path.read_text()[-3000:]
    finally:
        ingest.send_signal(signal.SIGKILL)
        ingest.wait(timeout=30)
    assert {r.key for r in _plain_read(settings, settings.pipeline.output_topic)} == published
    assert committed_offsets(settings.kafka) == {0: len(first)}, "nothing of the second run committed"

    proxy.refuse_produce = False
    rerun = embedstream("ingest", env=settings_env(settings), timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_same_as_the_store(settings, "qdrant")
    assert committed_offsets(settings.kafka) == watermarks(settings)
