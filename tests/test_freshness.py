"""Freshness mechanisms of stream mode (the figures are in bench/reports/freshness.md, not in timed tests).

* A bundle closes as soon as the reader has caught up with its partition: with the latency budget and the
  drain clock both set to a minute and a trickle of events that keeps every poll busy, the committed offset
  follows the trickle.
* Under a backlog the reader is never caught up; the latency budget still closes bundles: the group's
  committed offset moves in many steps while the backlog drains, instead of once at the end.
* The event-latency histogram and the oldest-unprocessed-age gauge are served with the consumer lag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import PartitionSpec, committed_offsets, ensure_topics, partition_backlog
from embedstream.schemas.settings import Settings
from embedstream.workers.broker import free_port
from tests.helpers import send_raw, text_event, wait_for

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000


@contextmanager
def streaming(settings: Settings) -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=run_ingest, args=(settings,), kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive()


def test_a_trickle_is_committed_as_it_comes_not_when_a_clock_runs_out(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        kafka={"partitions": 1},
        # Neither the budget nor the drain clock can close a bundle within the test, and events arrive faster
        # than a poll times out, so no poll comes back empty: only the caught-up rule ends bundles.
        pipeline={"mode": "stream", "max_latency_ms": MINUTE_MS, "max_bundle_seconds": 60.0, "poll_timeout_ms": 2000},
    )
    ensure_topics(settings.kafka, [settings.kafka.topic])
    with streaming(settings):
        send_raw(settings, [(None, text_event("warm", "the pipeline has started"), [])])
        assert wait_for(lambda: committed_offsets(settings.kafka).get(0) == 1, 120), "the warm-up never committed"
        seen: set[int] = set()
        for i in range(120):  # 20 events/s for 6 s: a bundle's round trip here is ~1 s, so ~6 commits at least
            send_raw(settings, [(None, text_event(f"t{i}", f"trickle event {i}"), [])])
            offset = committed_offsets(settings.kafka).get(0)
            if offset is not None:
                seen.add(offset)
            time.sleep(0.05)
        assert wait_for(lambda: committed_offsets(settings.kafka).get(0) == 121, 30)
    during = sorted(offset for offset in seen if 1 < offset < 121)
    assert len(during) >= 5, f"while the trickle lasted the committed offset moved only through {during}"


def test_the_budget_closes_bundles_under_a_backlog(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        kafka={"partitions": 1},
        pipeline={
            "mode": "stream",
            "max_latency_ms": 200,
            "max_records_per_bundle": 1_000_000,  # only the budget can end a bundle of this backlog
            "sort_window": 64,
        },
    )
    total = 1500
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(None, text_event(f"b{i}", f"backlog event number {i}"), []) for i in range(total)])
    seen: set[int] = set()
    with streaming(settings):

        def drained() -> bool:
            offset = committed_offsets(settings.kafka).get(0)
            if offset is not None:
                seen.add(offset)
            return offset == total

        assert wait_for(drained, 300), f"committed {sorted(seen)[-1:]} of {total}"
    steps = sorted(offset for offset in seen if 0 < offset < total)
    assert len(steps) >= 3, f"the committed offset moved only through {steps} before reaching {total}"


def test_latency_and_age_metrics_are_served(make_settings: Callable[..., Settings]) -> None:
    port = free_port()
    settings = make_settings(pipeline={"mode": "stream", "metrics_port": port, "lag_interval_s": 0.5})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    with streaming(settings):
        send_raw(settings, [(None, text_event(f"m{i}", f"metric event {i}"), []) for i in range(10)])
        assert wait_for(lambda: sum(o or 0 for o in committed_offsets(settings.kafka).values()) >= 10, 120)

        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                return ""

        def ages(body: str) -> list[float]:
            prefix = "embedstream_oldest_unprocessed_age_seconds{"
            return [float(line.split()[-1]) for line in body.splitlines() if line.startswith(prefix)]

        # Everything is committed: once the watcher has looked again, no partition has anything waiting.
        assert wait_for(lambda: len(found := ages(scraped())) == 3 and not any(found), 30), scraped()
        body = scraped()
    count = [line for line in body.splitlines() if line.startswith("embedstream_event_latency_seconds_count")]
    assert count and float(count[0].split()[-1]) >= 10


def commit(settings: Settings, offset: int) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=[settings.kafka.bootstrap_servers], group_id=settings.kafka.group_id, enable_auto_commit=False
    )
    consumer.commit({TopicPartition(settings.kafka.topic, 0): OffsetAndMetadata(offset, "", -1)})
    consumer.close()


def test_the_backlog_names_the_age_of_the_oldest_waiting_event(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(None, text_event(f"w{i}", f"waiting event {i}"), []) for i in range(3)])
    time.sleep(1.0)
    spec = PartitionSpec(settings.kafka.topic, 0, 0, None)
    ((lag, age),) = partition_backlog(settings.kafka, [spec]).values()
    assert lag == 3 and 1.0 <= age < 60
    commit(settings, 1)
    ((lag, age_after_one),) = partition_backlog(settings.kafka, [spec]).values()
    assert lag == 2 and 1.0 <= age_after_one < 60  # the second event waits now
    commit(settings, 3)
    assert partition_backlog(settings.kafka, [spec])[(settings.kafka.topic, 0)] == (0, 0.0)
