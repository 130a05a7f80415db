"""A real Flink run: ``ingest --runner=FlinkRunner --flink_master=[local]`` with Beam's Flink job server (Beam 2.50's
Flink 1.16 runner, the newest Maven Central serves here: ``tests/flink_job_server.py``) and an embedded Flink; the
steps run in this machine's Python (LOOPBACK), so the embedded store works.

Only the drain runs here. A stream run on this pairing (the locked Beam's Python SDK, Beam 2.50's job server) starts,
reads nothing for four minutes and cancels cleanly on SIGTERM: the streaming stand-in stays the portable job service
with an external worker pool (``tests/test_runners.py``); docs/measurements.md has the details."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from tests.flink_job_server import job_server_jar
from tests.helpers import send_raw, stored_ids, text_event, watermarks

pytestmark = [pytest.mark.brokers("kafka"), pytest.mark.integration]


def flink_args(jar: Path) -> list[str]:
    return ["--runner=FlinkRunner", "--flink_master=[local]", f"--flink_job_server_jar={jar}", "--parallelism=1"]


@pytest.fixture(scope="module")
def jar() -> Path:
    return job_server_jar()


def test_a_drain_on_flink_stores_every_event_and_commits_at_the_end(make_settings, jar):
    """Flink runs a drain as a batch job, where Beam's portable Flink runner refuses bundle finalizers: the read
    asks for none and the launcher commits the stop offsets once the job has succeeded."""
    settings = make_settings(kafka={"partitions": 2}, media={"modalities": ["text"]})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(f"k{i}".encode(), text_event(f"d{i}", f"drained by flink {i}"), []) for i in range(40)])
    send_raw(settings, [(None, b"{not json", [])])

    result = run_ingest(settings, flink_args(jar))

    assert stored_ids(settings) == {f"d{i}" for i in range(40)}
    assert (result.points_upserted, result.dead_letters) == (40, 1)
    assert committed_offsets(settings.kafka) == watermarks(settings)
