"""Faults at real boundaries: the broker's connections cut mid-run, a store that refuses writes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from embedstream.pipelines.handles import Handle
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.observability import INGEST
from embedstream.pipelines.plan import plan_ingest
from embedstream.pipelines.stores import StoreLockedError, VectorStore, open_store
from embedstream.pipelines.stores.shared import SharedStore
from embedstream.schemas.point import PointRecord
from embedstream.schemas.settings import Settings
from embedstream.workers.broker import Broker, free_port, start_broker
from tests.helpers import (
    Message,
    embedstream,
    one_line_error,
    read_topic,
    send_raw,
    settings_env,
    start_stream_ingest,
    stored_ids,
    text_event,
    wait_for,
    watermarks,
)
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


def test_dropped_broker_connections_lose_and_duplicate_nothing(make_settings, proxied_broker):
    proxy = proxied_broker
    settings = make_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{proxy.port}"},
        pipeline={"max_records_per_bundle": 100},  # many bundles, many commits to interrupt
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    messages: list[Message] = [
        (f"n{i}".encode(), text_event(f"n{i}", f"network fault sentence number {i}"), []) for i in range(3000)
    ]
    messages.insert(1400, (None, b"{broken", []))
    send_raw(settings, messages)

    done = threading.Event()

    def saboteur() -> None:
        # Once the pipeline has committed its first bundle (the preflight is over), cut everything, again and again.
        deadline = time.monotonic() + 60
        while not any(committed_offsets(settings.kafka).values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        while not done.wait(0.3):
            proxy.drop_all()

    thread = threading.Thread(target=saboteur, daemon=True)
    thread.start()
    try:
        result = run_ingest(settings)
    finally:
        done.set()
        thread.join()

    assert proxy.drops >= 5, "the faults must have hit the run"
    assert result.points_upserted >= 3000
    store = open_store(settings.qdrant)
    try:
        ids = [p.payload["id"] for p in store.scroll()]
    finally:
        store.close()
    assert sorted(ids) == sorted(f"n{i}" for i in range(3000))
    assert committed_offsets(settings.kafka) == watermarks(settings)
    dead = read_topic(settings, settings.kafka.dead_letter_topic)
    assert {d.value for d in dead} == {b"{broken"}


def _poisoned(prefix: str, count: int, every: int) -> tuple[list[Message], set[bytes]]:
    """``count`` valid text events with a malformed record before every ``every``-th; and the malformed values."""
    messages: list[Message] = []
    poison: set[bytes] = set()
    for i in range(count):
        if i % every == 0:
            value = f"{{{prefix}{i} is not json".encode()
            poison.add(value)
            messages.append((f"bad-{prefix}{i}".encode(), value, []))
        messages.append((f"{prefix}{i}".encode(), text_event(f"{prefix}{i}", f"dead-letter outage sentence {i}"), []))
    return messages, poison


def test_a_dead_letter_topic_that_refuses_writes_holds_the_bundle_until_it_takes_them(make_settings, proxied_broker):
    """The broker cuts every Produce request (reads and commits still work) for a while: the dead letters are
    sent again with backoff, nothing is committed meanwhile, and once writes are taken the run completes."""
    proxy = proxied_broker
    settings = make_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{proxy.port}", "partitions": 1},
        pipeline={"max_records_per_bundle": 200},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    messages, poison = _poisoned("v", 1000, 100)
    send_raw(settings, messages)
    proxy.refuse_produce = True
    held: list[dict[int, int | None]] = []

    def heal() -> None:
        wait_for(lambda: proxy.refused >= 3, 60)  # the first send and at least two resends were refused
        held.append(committed_offsets(settings.kafka))
        proxy.refuse_produce = False

    healer = threading.Thread(target=heal, daemon=True)
    healer.start()
    result = run_ingest(settings)
    healer.join()

    assert proxy.refused >= 3 and held and not any(held[0].values()), "nothing committed while the topic refused"
    assert result.points_upserted == 1000
    assert stored_ids(settings) == {f"v{i}" for i in range(1000)}
    assert sorted(d.value for d in read_topic(settings, settings.kafka.dead_letter_topic)) == sorted(poison)
    assert committed_offsets(settings.kafka) == watermarks(settings)


def test_a_dead_letter_topic_that_stays_unwritable_fails_the_run_uncommitted_and_a_rerun_completes(
    make_settings, proxied_broker
):
    proxy = proxied_broker
    settings = make_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{proxy.port}", "partitions": 1},
        pipeline={"max_records_per_bundle": 200, "dead_letter_retry_s": 4},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    messages, poison = _poisoned("w", 600, 150)
    send_raw(settings, messages)
    proxy.refuse_produce = True

    failed = embedstream("ingest", env=settings_env(settings), timeout=300)

    assert failed.returncode == 2, failed.stderr[-3000:]
    line = one_line_error(failed)
    assert f"dead-letter topic {settings.kafka.dead_letter_topic} did not take" in line, line
    assert "nothing of this bundle is committed" in line
    assert not any(committed_offsets(settings.kafka).values()), "the poisoned first bundle must stay uncommitted"
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []

    proxy.refuse_produce = False
    again = embedstream("ingest", env=settings_env(settings), timeout=300)

    assert again.returncode == 0, again.stderr[-3000:]
    assert stored_ids(settings) == {f"w{i}" for i in range(600)}
    assert sorted(d.value for d in read_topic(settings, settings.kafka.dead_letter_topic)) == sorted(poison)
    assert committed_offsets(settings.kafka) == watermarks(settings)


def test_a_broker_slower_than_an_idle_poll_still_delivers_to_a_reader_of_several_partitions(
    make_settings, proxied_broker
):
    """Every broker response 0.8 s late (tiered storage, a distant region): far longer than an idle poll (tens
    of ms). A reader that handed one consumer from partition to partition dropped each fetch in flight and never
    read a record; with a consumer per partition the fetches complete between bundles."""
    proxy = proxied_broker
    settings = make_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{proxy.port}", "partitions": 3},
        pipeline={"mode": "stream"},
        media={"modalities": ["text"]},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(f"l{i}".encode(), text_event(f"l{i}", f"slow broker sentence {i}"), []) for i in range(300)])
    marks = watermarks(settings)
    stop = threading.Event()

    def stop_when_done() -> None:
        wait_for(lambda: committed_offsets(settings.kafka) == marks, 240)
        stop.set()

    watcher = threading.Thread(target=stop_when_done, daemon=True)
    watcher.start()
    proxy.response_delay_s = 0.8
    run_ingest(settings, stop=stop)
    watcher.join()
    proxy.response_delay_s = 0.0

    assert committed_offsets(settings.kafka) == marks
    assert stored_ids(settings) == {f"l{i}" for i in range(300)}


def test_store_refusing_writes_fails_the_run_commits_nothing_and_resume_completes(make_settings):
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(f"s{i}".encode(), text_event(f"s{i}", f"store fault text {i}"), []) for i in range(200)])
    holder = open_store(settings.qdrant)  # another process's lock on the embedded store: every write refused
    holder.ensure_spaces(plan_ingest(settings).spaces)
    holder.count()
    try:
        with pytest.raises(StoreLockedError, match="in use by another process"):
            run_ingest(settings)
        # only the start offsets the run claimed before reading: nothing past them
        assert all(offset == 0 for offset in committed_offsets(settings.kafka).values())
        assert holder.count() == 0
    finally:
        holder.close()

    result = run_ingest(settings)  # resumes from the (uncommitted) start

    assert result.points_upserted == 200
    assert committed_offsets(settings.kafka) == watermarks(settings)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 56 MB tmpfs, resizable while mounted: a disk that fills up (mounting needs root, as CI runs). A new
    shard takes ~28 MB of it (write-ahead log, segment pages, the four payload indexes)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; CI runs as root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=56m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_store_disk_stops_the_run_clearly_and_a_rerun_completes_once_space_is_freed(
    make_settings: Callable[..., Settings], small_disk: Path
) -> None:
    """As a deployment meets it: `embedstream ingest` in its own process, its store on a disk that fills."""
    settings = make_settings(
        kafka={"partitions": 1},
        # the margin must cover what opening a shard allocates (~15 MB here), or opening itself dies of SIGBUS
        qdrant={"path": str(small_disk / "store"), "min_free_mb": 24},
        pipeline={"max_records_per_bundle": 400},
        media={"modalities": ["text"]},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    text = "a sentence long enough to take some room in the store's payload and vectors " * 3
    send_raw(settings, [(f"d{i}".encode(), text_event(f"d{i}", f"{i}: {text}"), []) for i in range(2000)])

    full = embedstream("ingest", env=settings_env(settings), timeout=600)
    assert full.returncode == 2 and "MB free, under qdrant.min_free_mb" in one_line_error(full), full.stderr[-3000:]
    committed = committed_offsets(settings.kafka).get(0) or 0
    assert 0 < committed < 2000, f"some bundles should have landed before the disk filled: {full.stderr[-600:]}"

    subprocess.run(["mount", "-o", "remount,size=128m", str(small_disk)], check=True)  # space freed
    assert {f"d{i}" for i in range(committed)} <= stored_ids(settings)  # nothing committed that is not durable
    again = embedstream("ingest", env=settings_env(settings), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]

    assert stored_ids(settings) == {f"d{i}" for i in range(2000)}
    assert committed_offsets(settings.kafka) == watermarks(settings)
    assert read_topic(settings, settings.kafka.dead_letter_topic) == []  # a full disk is no event's fault


def test_a_broker_away_for_a_minute_is_waited_out_and_said_so(make_settings: Callable[..., Settings], tmp_path: Path):
    """A broker of its own, frozen (SIGSTOP) for 60 s under a streaming `embedstream ingest`: no crash, no dead
    letter, a warning every few seconds, and once it answers again the events sent meanwhile land."""
    broker = start_broker(port=free_port(), log_dir=tmp_path)
    settings = make_settings(
        kafka={"bootstrap_servers": broker.bootstrap, "partitions": 1}, media={"modalities": ["text"]}
    )
    log_path = tmp_path / "stream.log"
    process = None
    try:
        ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
        send_raw(settings, [(f"a{i}".encode(), text_event(f"a{i}", f"before the outage {i}"), []) for i in range(50)])
        process = start_stream_ingest(settings, log_path)
        assert wait_for(lambda: committed_offsets(settings.kafka).get(0) == 50, 120), log_path.read_text()[-3000:]

        os.kill(broker.pid, signal.SIGSTOP)
        time.sleep(60)
        assert process.poll() is None, f"ingest gave up: {log_path.read_text()[-3000:]}"
        os.kill(broker.pid, signal.SIGCONT)

        send_raw(settings, [(f"b{i}".encode(), text_event(f"b{i}", f"after the outage {i}"), []) for i in range(50)])
        assert wait_for(lambda: committed_offsets(settings.kafka).get(0) == 100, 120), log_path.read_text()[-3000:]
        assert wait_for(lambda: "the broker answers again" in log_path.read_text(), 30), log_path.read_text()[-3000:]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, log_path.read_text()[-3000:]
        assert stored_ids(settings) == {f"a{i}" for i in range(50)} | {f"b{i}" for i in range(50)}
        assert read_topic(settings, settings.kafka.dead_letter_topic) == []  # an outage is no event's fault
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker.pid, signal.SIGCONT)
        broker.stop()
    warnings = [line for line in log_path.read_text().splitlines() if "has not answered for" in line]
    assert len(warnings) >= 6, log_path.read_text()[-3000:]  # one every 5-8 s (a probe waits 3 s) while away


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path)
    yield server
    server.close()


def test_a_broker_killed_and_restarted_with_its_data_is_reconnected_to_and_nothing_is_lost_or_doubled(
    make_settings: Callable[..., Settings], s3_server: S3Server, tmp_path: Path
) -> None:
    """tansu keeping its log in S3 (moto on loopback), kill -9'd while `embedstream ingest --mode stream` is
    mid-topic, restarted on the same port: the pipeline reconnects and goes on from its committed offsets."""
    port = free_port()

    def start() -> Broker:
        return start_broker(port=port, log_dir=tmp_path, storage=s3_server.storage, env=s3_server.env())

    broker = start()
    settings = make_settings(
        kafka={"bootstrap_servers": broker.bootstrap, "partitions": 2},
        pipeline={"max_records_per_bundle": 64},  # frequent commits: the kill lands between two of them
        media={"modalities": ["text"]},
    )
    log_path = tmp_path / "stream.log"
    process = None
    before = [(f"a{i}".encode(), text_event(f"a{i}", f"before the restart, sentence {i}"), []) for i in range(1500)]
    after = [(f"b{i}".encode(), text_event(f"b{i}", f"after the restart, sentence {i}"), []) for i in range(300)]
    try:
        ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
        send_raw(settings, [*before[:700], (b"bad", b"{not json", []), *before[700:]])
        process = start_stream_ingest(settings, log_path)
        assert wait_for(lambda: _committed(settings) >= 200, 120), log_path.read_text()[-3000:]

        at_kill = _committed(settings)  # at most what is committed when the kill lands
        os.kill(broker.pid, signal.SIGKILL)
        time.sleep(5)
        assert process.poll() is None, f"ingest gave up: {log_path.read_text()[-3000:]}"
        broker = start()
        assert _committed(settings) >= at_kill, "the broker kept its committed offsets"
        assert _committed(settings) < 1501, "the restart must land mid-topic"

        send_raw(settings, after)
        marks = watermarks(settings)
        assert sum(marks.values()) == 1801, "the broker kept every record"
        assert wait_for(lambda: committed_offsets(settings.kafka) == marks, 180), log_path.read_text()[-3000:]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, log_path.read_text()[-3000:]
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    try:
        store = open_store(settings.qdrant)
        try:
            ids = [point.payload["id"] for point in store.scroll()]
        finally:
            store.close()
        assert len(ids) == len(set(ids)) == 1800  # none lost; a replayed event overwrites its own point
        assert set(ids) == {f"a{i}" for i in range(1500)} | {f"b{i}" for i in range(300)}
        assert [d.value for d in read_topic(settings, settings.kafka.dead_letter_topic)] == [b"{not json"]
    finally:
        broker.stop()


def _committed(settings: Settings) -> int:
    return sum(v or 0 for v in committed_offsets(settings.kafka).values())


class SlowStore(SharedStore):
    """A real embedded store behind a delay at its boundary: every upsert, plain or conditional (the pipeline's
    writes are conditional: ``upsert_newer``), waits ``delay_s`` first."""

    def __init__(self, inner: VectorStore, delay_s: float) -> None:
        super().__init__(inner)
        self.delay_s = delay_s
        self.upserts = 0

    def upsert(self, points: Sequence[PointRecord]) -> None:
        time.sleep(self.delay_s)
        self.upserts += 1
        super().upsert(points)

    def upsert_newer(self, points: Sequence[PointRecord]) -> None:
        time.sleep(self.delay_s)
        self.upserts += 1
        super().upsert_newer(points)


def test_a_slow_store_slows_the_reader_keeps_memory_bounded_and_commits_only_what_is_stored(make_settings):
    """Each upsert takes 0.5 s (the store is the bottleneck, ~130 points/s): the reader does not run ahead of the
    store by more than one bundle (records read − points stored, from the metrics), every committed offset is
    stored when it is seen, and the run ends with everything stored and committed."""
    settings = make_settings(
        kafka={"partitions": 1},
        pipeline={"mode": "stream", "max_records_per_bundle": 256, "upsert_batch_size": 64},
        media={"modalities": ["text"]},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    total = 2000
    send_raw(settings, [(f"s{i}".encode(), text_event(f"s{i}", f"slow store sentence {i}"), []) for i in range(total)])
    store = SlowStore(open_store(settings.qdrant), delay_s=0.5)
    store.ensure_spaces(plan_ingest(settings).spaces)  # counted from the start
    handle: Handle[VectorStore] = Handle.register(store, "store")
    stop = threading.Event()
    read_before = _records_read(settings.kafka.topic)
    in_flight: list[int] = []
    commits_ahead: list[tuple[int, int]] = []

    failures: list[BaseException] = []

    def watch() -> None:
        try:
            while not stop.is_set():
                committed = committed_offsets(settings.kafka).get(0) or 0
                stored = store.count()
                in_flight.append(int(_records_read(settings.kafka.topic) - read_before) - stored)  # an upper bound
                if committed > stored:
                    commits_ahead.append((committed, stored))
                if committed == total:
                    break
                time.sleep(0.2)
        except BaseException as exc:
            failures.append(exc)
        finally:
            stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    started = time.monotonic()
    watcher.start()
    try:
        run_ingest(settings, stop=stop, store=handle)
    finally:
        stop.set()
        watcher.join()
        handle.release()
    took = time.monotonic() - started
    try:
        assert failures == []
        assert store.upserts >= total // 64 and took >= store.upserts * store.delay_s  # the delay was the pace
        assert commits_ahead == [], "an offset was committed before its point was stored"
        assert len(in_flight) > 20 and 0 < max(in_flight) <= 256, max(in_flight)  # back-pressure: one bundle at most
        assert {str(p.payload["id"]) for p in store.scroll()} == {f"s{i}" for i in range(total)}
        assert committed_offsets(settings.kafka) == watermarks(settings)
    finally:
        store.close_owned()


def _records_read(topic: str) -> float:
    return INGEST.registry.get_sample_value("embedstream_records_read_total", {"topic": topic}) or 0.0
