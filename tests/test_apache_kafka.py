"""What only a real Apache Kafka can show (tansu refuses CreatePartitions, does not answer DeleteRecords, has no
transactions, compaction or SASL): partitions added to a live topic, records the broker deleted, a compacted events
topic, transactional producers, SCRAM over TLS, and Kafka's own tools reading what we commit and writing what we
read. Every test here runs on Apache Kafka 4.4 (``tests/apache_kafka.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import PartitionSpec, committed_offsets, ensure_topics, partition_backlog
from embedstream.pipelines.stores import open_store
from embedstream.schemas.dead_letter import DeadLetter
from embedstream.workers import dlq
from embedstream.workers.broker import free_port
from tests.apache_kafka import SCRAM_USERS, ApacheKafka
from tests.helpers import (
    read_topic,
    reset_group,
    sample,
    send_raw,
    settings_env,
    start_stream_ingest,
    stored_ids,
    text_event,
    wait_for,
)

pytestmark = pytest.mark.brokers("kafka")

GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"


def admin(settings) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)


def texts(settings) -> dict[str, str]:
    """Event id → stored text of every live point."""
    store = open_store(settings.qdrant)
    try:
        return {p.payload["id"]: p.payload["text"] for p in store.scroll()}
    finally:
        store.close()


def send_to(settings, partition: int, messages: list[tuple[str, bytes]]) -> None:
    """Send (key, value) pairs to one partition, in order (a key's partition moves when partitions are added)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for key, value in messages:
        producer.send(settings.kafka.topic, key=key.encode(), value=value, partition=partition)
    producer.flush()
    producer.close()


def caught_up(settings, partitions: int) -> bool:
    specs = [PartitionSpec(settings.kafka.topic, p, 0, None) for p in range(partitions)]
    backlog = partition_backlog(settings.kafka, specs)
    return len(backlog) == partitions and not any(b.lag for b in backlog.values())


class Streaming:
    """``run_ingest`` in stream mode on a thread of this process, stopped (and joined) on exit."""

    def __init__(self, settings) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(settings,))

    def _run(self, settings) -> None:
        try:
            run_ingest(settings, stop=self.stop)
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> Streaming:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(120)
        assert not self.thread.is_alive() and not self.errors, self.errors


@pytest.mark.integration
def test_partitions_added_to_a_live_topic_are_read_from_their_start_and_the_newest_version_wins(make_settings):
    """Two partitions, a stream reading them with ``auto_offset_reset = latest``; the topic grows to four and
    producers write to the new partitions at once, before discovery: newer versions of existing ids, new ids and
    a stale version. Everything lands, from the new partitions' first offset; each id holds its newest version."""
    settings = make_settings(
        kafka={"partitions": 2, "auto_offset_reset": "latest"},
        pipeline={"mode": "stream", "discovery_interval_s": 1.0},
        media={"modalities": ["text"]},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    with Streaming(settings) as stream:
        # the run's claim commits its start offsets: from then on nothing written is skipped
        assert wait_for(lambda: None not in committed_offsets(settings.kafka).values(), 60), stream.errors
        for p in (0, 1):
            send_to(
                settings,
                p,
                [(f"a{i}", text_event(f"a{i}", f"first words of a{i}", version=10)) for i in range(p, 20, 2)],
            )
        assert wait_for(lambda: caught_up(settings, 2), 60)
        client = admin(settings)
        client.create_partitions({settings.kafka.topic: 4})
        client.close()
        for p in (2, 3):
            newer = [(f"a{i}", text_event(f"a{i}", f"newer words of a{i}", version=20)) for i in range(p - 2, 20, 2)]
            fresh = [(f"b{p}{i}", text_event(f"b{p}{i}", f"new id b{p}{i} in a new partition")) for i in range(5)]
            send_to(settings, p, newer + fresh)
        send_to(settings, 3, [("a0", text_event("a0", "a stale version of a0", version=15))])
        assert wait_for(lambda: caught_up(settings, 4), 90), "the new partitions were not read within 90 s"
    held = texts(settings)
    assert {f"a{i}" for i in range(20)} | {f"b{p}{i}" for p in (2, 3) for i in range(5)} == set(held)
    assert all(held[f"a{i}"] == f"newer words of a{i}" for i in range(20)), held
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []  # a stale version is no error


@pytest.mark.integration
def test_a_by_reference_dead_letter_whose_source_the_broker_deleted_is_reported_not_guessed(make_settings):
    settings = make_settings(kafka={"partitions": 1}, pipeline={"max_event_bytes": 1000})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    huge = json.dumps({"schema": 1, "id": "huge", "modality": "text", "text": "x" * 1_200_000}).encode()
    send_raw(settings, [(b"huge", huge, []), (b"fine", text_event("fine", "small and fine"), [])])
    run_ingest(settings)
    (letter,) = read_topic(settings, settings.kafka.dead_letter_topic)
    assert DeadLetter.context_of(letter.headers)["by-reference"] == "1"

    client = admin(settings)
    client.delete_records({TopicPartition(settings.kafka.topic, 0): 1})  # the oversized event is gone
    client.close()
    started = time.monotonic()
    report = dlq.replay(settings, to_topic=f"{settings.kafka.topic}.quarantine")
    assert (report.replayed, report.unavailable) == (0, 1)
    assert time.monotonic() - started < 20  # known gone at once, not waited for
    assert read_topic(settings, f"{settings.kafka.topic}.quarantine") == []


@pytest.mark.integration
def test_a_compacted_events_topic_with_tombstones_converges_before_and_after_compaction(make_settings):
    """The events topic compacted by the broker: earlier versions and deleted ids vanish from the log, leaving
    gaps in the offsets. A drain before compaction and a re-read from offset 0 after it hold the same store."""
    settings = make_settings(kafka={"partitions": 1})
    client = admin(settings)
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "200",
        "min.cleanable.dirty.ratio": "0.001",
        "delete.retention.ms": "100",
        "min.compaction.lag.ms": "0",
    }
    client.create_topics([NewTopic(settings.kafka.topic, 1, 1, topic_configs=config)])
    client.close()
    history = [  # what compaction removes (a's first two versions, b) lies between records it keeps
        (b"c", text_event("c", "c stays")),
        (b"a", text_event("a", "a, first version")),
        (b"b", text_event("b", "b, soon deleted")),
        (b"d", text_event("d", "d stays too")),
        (b"a", text_event("a", "a, second version")),
        (b"b", None),  # a tombstone: delete b
        (b"a", text_event("a", "a, third version")),
    ]
    send_raw(settings, [(key, value, []) for key, value in history])
    run_ingest(settings)
    before = texts(settings)
    assert before == {"a": "a, third version", "c": "c stays", "d": "d stays too"}

    def compacted() -> bool:
        time.sleep(0.3)  # a later record rolls the segment (segment.ms): only closed segments are compacted
        send_raw(settings, [(b"filler", text_event("filler", "rolls the segment"), [])])
        return len([r for r in read_topic(settings, settings.kafka.topic) if r.key in (b"a", b"b")]) <= 2

    assert wait_for(compacted, 60), "the broker did not compact the topic within 60 s"
    offsets = [r.offset for r in read_topic(settings, settings.kafka.topic)]
    assert offsets[:2] == [0, 3], offsets  # c and d kept, a's first version and b gone: a gap to read across

    reset_group(settings)
    rebuilt = settings.replace(qdrant={"path": settings.qdrant.path + "-rebuilt"})
    run_ingest(rebuilt)
    after = texts(rebuilt)
    assert {k: v for k, v in after.items() if k != "filler"} == before
    assert None not in committed_offsets(rebuilt.kafka).values()


@pytest.mark.integration
def test_records_of_aborted_transactions_are_never_embedded_and_committed_ones_are(make_settings):
    settings = make_settings(kafka={"partitions": 2})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, transactional_id=settings.kafka.group_id
    )
    producer.init_transactions()
    for outcome in ("commit", "abort", "commit"):
        producer.begin_transaction()
        for i in range(4):
            producer.send(
                settings.kafka.topic,
                key=f"{outcome}{i}".encode(),
                value=text_event(f"{outcome}-{i}-{time.monotonic_ns()}", f"{outcome} {i}"),
            )
        producer.flush()
        producer.commit_transaction() if outcome == "commit" else producer.abort_transaction()
    producer.close()
    send_raw(settings, [(b"plain", text_event("plain", "sent without a transaction"), [])])

    run_ingest(settings)
    ids = stored_ids(settings)
    assert len(ids) == 9 and "plain" in ids and not any(i.startswith("abort") for i in ids), ids
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []

    # read_uncommitted (a setting) reads them all: the aborted records are in the log
    everything = settings.replace(
        kafka={"isolation_level": "read_uncommitted", "group_id": settings.kafka.group_id + ".all"},
        qdrant={"path": settings.qdrant.path + "-all"},
    )
    run_ingest(everything)
    assert len(stored_ids(everything)) == 13


@pytest.mark.unit
@pytest.mark.parametrize(
    ("line", "said"),
    [
        (
            "Connection lost: [Error 58] SaslAuthenticationFailedError: SaslAuthenticationFailedError: Authentication "
            "failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (backoff 0.1 secs)",
            "refused the credentials (Authentication failed during authentication due to invalid credentials with SASL "
            "mechanism SCRAM-SHA-512): check kafka.sasl_mechanism",
        ),
        (
            "Abort ([Error 58] SaslAuthenticationFailedError: SaslAuthenticationFailedError: bad proof)",
            "refused the credentials (bad proof): check",
        ),
        (
            "Connection lost: SaslHandshake failed: UnsupportedSaslMechanismError",  # not a TLS handshake
            "refused the SASL handshake (UnsupportedSaslMechanismError): check kafka.sasl_mechanism",
        ),
        (
            "Connection failed: KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
            "verify failed: self-signed certificate in certificate chain (_ssl.c:1006)",
            "failed the TLS handshake ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
            "certificate in certificate chain (_ssl.c:1006)): check",
        ),
    ],
)
def test_a_failed_bootstrap_names_the_cause_kafka_python_logged_and_only_a_fresh_one(line, said):
    import logging

    from embedstream.pipelines.io import kafka_diagnosis

    started = time.monotonic()
    logging.getLogger("kafka.net.connection").warning(line)
    cause = kafka_diagnosis.cause_since(started)
    assert cause is not None and cause.startswith(said), cause
    assert kafka_diagnosis.cause_since(time.monotonic() + 1) is None  # a client that began later: not its cause


def describe_group(kafka: ApacheKafka, group: str) -> dict[int, tuple[int, int, int]]:
    """Kafka's own ``kafka-consumer-groups --describe``: partition → (current offset, log end offset, lag)."""
    out = kafka.tool(GROUPS, "--bootstrap-server", kafka.bootstrap, "--describe", "--group", group)
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[0] == group and cells[2].isdigit():
            rows[int(cells[2])] = (int(cells[3]), int(cells[4]), int(cells[5]))
    return rows


@pytest.mark.integration
def test_kafkas_own_tools_see_our_offsets_and_lag_and_feed_us_events(make_settings, apache_kafka, tmp_path):
    """Events from Kafka's Java console producer are ingested by ``ingest --mode stream``; while a transaction
    holds records back, ``kafka-consumer-groups --describe`` shows the same lag as our ``/metrics``, and both
    fall to 0 once it commits and its records are embedded."""
    settings = make_settings(kafka={"partitions": 2}, pipeline={"lag_interval_s": 0.5}, media={"modalities": ["text"]})
    topic, group = settings.kafka.topic, settings.kafka.group_id
    ensure_topics(settings.kafka, [topic, settings.kafka.dead_letter_topic])
    lines = "".join(
        f"j{i}\t{text_event(f'j{i}', f'written by the Java console producer {i}').decode()}\n" for i in range(10)
    )
    apache_kafka.tool(
        CONSOLE_PRODUCER,
        "--bootstrap-server",
        apache_kafka.bootstrap,
        "--topic",
        topic,
        "--reader-property",
        "parse.key=true",
        "--reader-property",
        "key.separator=\t",
        input=lines.encode(),
    )
    port = free_port()
    log = tmp_path / "ingest.log"
    process = start_stream_ingest(settings, log, extra_args=["--metrics-port", str(port)])

    def metrics() -> str:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return ""

    def lag_is(expected: dict[int, int], points: int) -> bool:
        body = metrics()
        ours = {p: sample(body, "embedstream_consumer_lag", topic=topic, partition=str(p)) for p in (0, 1)}
        theirs = {p: row[2] for p, row in describe_group(apache_kafka, group).items()}
        done = sample(body, "embedstream_events_total", outcome="point") == points
        return done and ours == {p: float(v) for p, v in expected.items()} and theirs == expected

    try:
        assert wait_for(lambda: lag_is({0: 0, 1: 0}, 10), 120), log.read_text()[-3000:]
        rows = describe_group(apache_kafka, group)
        assert {p: row[0] for p, row in rows.items()} == committed_offsets(settings.kafka)
        assert all(current == end for current, end, _ in rows.values())

        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, transactional_id=f"{group}.tx")
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(6):
            producer.send(
                topic, key=f"t{i}".encode(), value=text_event(f"t{i}", f"held by a transaction {i}"), partition=0
            )
        producer.flush()  # written, not committed: the log end moves, a read_committed reader cannot pass them
        assert wait_for(lambda: lag_is({0: 6, 1: 0}, 10), 60), metrics()[-2000:]
        producer.commit_transaction()
        assert wait_for(lambda: lag_is({0: 0, 1: 0}, 16), 60), metrics()[-2000:]  # the marker is passed too
        before = describe_group(apache_kafka, group)[1][0]
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, key=f"x{i}".encode(), value=text_event(f"x{i}", f"aborted {i}"), partition=1)
        producer.flush()
        producer.abort_transaction()
        producer.close()
        # nothing embedded, and the reader's commit moves past the aborted records and their marker
        assert wait_for(lambda: lag_is({0: 0, 1: 0}, 16), 60), metrics()[-2000:]
        assert describe_group(apache_kafka, group)[1][0] == before + 4
    finally:
        process.terminate()
        process.wait(60)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert {f"j{i}" for i in range(10)} | {f"t{i}" for i in range(6)} == stored_ids(settings)


@pytest.mark.integration
def test_ingest_produce_and_replay_authenticate_with_scram_over_tls(make_settings, apache_kafka, tmp_path):
    """The security settings of docs/configuration.md against a SASL_SSL listener (SCRAM-SHA-512, a CA made for the run):
    produce, ingest and ``dlq replay`` work from the CLI; a wrong password is one line and exit 2."""
    settings = make_settings(kafka={"partitions": 1})
    user, password = next(iter(SCRAM_USERS.items()))
    env = {
        **settings_env(settings),
        "EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS": apache_kafka.secure_bootstrap,
        "EMBEDSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "EMBEDSTREAM_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "EMBEDSTREAM_KAFKA__SASL_PLAIN_USERNAME": user,
        "EMBEDSTREAM_KAFKA__SASL_PLAIN_PASSWORD": password,
        "EMBEDSTREAM_KAFKA__SSL_CAFILE": str(apache_kafka.ca_file),
    }
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps({"schema": 1, "id": f"s{i}", "modality": "text", "text": f"secure sentence {i}"}) + "\n"
            for i in range(5)
        )
    )
    send_raw(settings, [(None, b"{not json", [])])  # one for the dead-letter topic (on the plaintext listener)

    def cli(*args: str, environment: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "embedstream.workers.cli", *args]
        return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)

    produced = cli("produce", str(events))
    assert produced.returncode == 0, produced.stderr[-2000:]
    ingested = cli("ingest", "--mode", "drain")
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    assert stored_ids(settings) == {f"s{i}" for i in range(5)}
    replayed = cli("dlq", "replay", "--to-topic", f"{settings.kafka.topic}.quarantine")
    said = replayed.stdout + replayed.stderr
    assert replayed.returncode == 0 and "replayed 1 dead letters" in said, said[-2000:]

    wrong = cli("ingest", "--mode", "drain", environment={**env, "EMBEDSTREAM_KAFKA__SASL_PLAIN_PASSWORD": "nope"})
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert wrong.returncode == 2 and len(lines) == 1 and "Traceback" not in wrong.stderr, wrong.stderr[-2000:]
    # the broker's refusal is named when kafka-python saw it; Kafka may instead just drop the connection (it delays,
    # then closes a failed authentication), and then the line says what to check
    assert "sasl_plain_password" in lines[0] and "no Kafka broker at" not in lines[0], lines[0]

    untrusted = {k: v for k, v in env.items() if k != "EMBEDSTREAM_KAFKA__SSL_CAFILE"}  # the system's CAs only
    wrong = cli("ingest", "--mode", "drain", environment=untrusted)
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert wrong.returncode == 2 and len(lines) == 1, wrong.stderr[-2000:]
    assert "TLS handshake" in lines[0] and "certificate verify failed" in lines[0], lines[0]
