"""Scale out by partitions: `--shard I/N` instances split a topic's partitions between them, exactly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.stores import open_store
from embedstream.schemas.settings import PipelineSettings
from tests.helpers import embedstream, send_raw, settings_env, text_event, watermarks

pytestmark = [pytest.mark.brokers("tansu", "kafka"), pytest.mark.integration]


def stored(settings) -> dict[str, int]:
    store = open_store(settings.qdrant)
    try:
        return {p.payload["id"]: p.payload["source"]["partition"] for p in store.scroll()}
    finally:
        store.close()


def test_two_shards_read_disjoint_partitions_that_cover_the_topic(make_settings, tmp_path):
    first = make_settings(kafka={"partitions": 6}, pipeline={"shard": "0/2"})
    second = first.replace(
        pipeline={"shard": "1/2"},
        qdrant={"path": str(tmp_path / "second-store")},  # each instance its own embedded store
    )
    ensure_topics(first.kafka, [first.kafka.topic])
    send_raw(first, [(f"k{i}".encode(), text_event(f"e{i}", f"sharded sentence {i}"), []) for i in range(120)])

    run_ingest(first)
    committed_after_first = committed_offsets(first.kafka)
    run_ingest(second)

    one, two = stored(first), stored(second)
    assert set(one) | set(two) == {f"e{i}" for i in range(120)} and not set(one) & set(two)
    assert {p % 2 for p in one.values()} == {0} and {p % 2 for p in two.values()} == {1}
    marks = watermarks(first)
    assert {p: o for p, o in committed_after_first.items() if o} == {p: marks[p] for p in (0, 2, 4) if marks[p]}
    assert committed_offsets(first.kafka) == marks


def test_the_shard_comes_from_the_cli_or_the_environment_and_is_checked(make_settings):
    settings = make_settings(kafka={"partitions": 2})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    send_raw(settings, [(b"a", text_event("a", "partition zero or one"), [])])
    env = {**settings_env(settings), "EMBEDSTREAM_PIPELINE__SHARD": "1/2"}
    shown = embedstream("ingest", "--shard", "0/2", env=env)
    assert shown.returncode == 0, shown.stderr
    refused = embedstream("ingest", "--shard", "2/2", env=env)
    assert refused.returncode == 2 and "shard" in refused.stderr
    with pytest.raises(ValidationError):
        PipelineSettings(shard="1/0")
