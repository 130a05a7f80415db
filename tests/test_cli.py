"""The CLI as a user runs it: subprocesses, real broker, real model, real store."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.schemas.settings import Settings
from embedstream.workers.broker import free_port, port_open
from tests.helpers import embedstream, one_line_error, read_topic, send_raw, settings_env, text_event
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


@pytest.mark.smoke
def test_produce_ingest_search_round_trip(make_settings, tmp_path):
    settings = make_settings()
    env = settings_env(settings)
    notes = tmp_path / "notes.txt"
    notes.write_text(
        "The lighthouse keeper climbed the spiral stairs at dusk.\n\nBakers rise before dawn to knead dough.\n"
    )
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"id": "a1", "text": "Volcanoes erupt molten rock called lava.", "metadata": {"topic": "geology"}})
        + "\n"
        + json.dumps({"schema": 1, "id": "a2", "modality": "text", "text": "Glaciers carve deep valleys."})
        + "\n"
        + json.dumps({"nonsense": True})
        + "\n"
    )

    produced = embedstream("produce", str(notes), str(docs), env=env)
    assert produced.returncode == 0, produced.stderr
    assert "sent 4 events" in produced.stdout and "skipped 1" in produced.stdout
    ingested = embedstream("ingest", "--mode", "drain", env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert "4 points upserted, 0 dead letters" in ingested.stdout

    found = embedstream("search", "molten lava from a volcano", "-k", "2", "--json", env=env)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits[0]["payload"]["id"] == "a1" and hits[0]["payload"]["metadata"] == {"topic": "geology"}
    filtered = embedstream("search", "stairs", "--where", "id=notes:1", env=env)
    assert filtered.returncode == 0 and "lighthouse keeper" in filtered.stdout and "Bakers" not in filtered.stdout


def test_dlq_stats_and_replay_commands(make_settings):
    settings = make_settings()
    env = settings_env(settings)
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    send_raw(settings, [(None, b"{broken", []), (b"ok", text_event("ok", "fine"), [])])
    assert embedstream("ingest", env=env).returncode == 0
    shown = embedstream("dlq", "stats", env=env)
    assert shown.returncode == 0 and "1 distinct dead letters" in shown.stdout and "malformed_json" in shown.stdout
    replayed = embedstream("dlq", "replay", "--reason", "malformed_json", "--to-topic", "quarantine", env=env)
    assert replayed.returncode == 0 and "replayed 1 dead letters" in replayed.stdout and "quarantine" in replayed.stdout


def test_missing_broker_is_one_clear_line_and_fast(make_settings):
    settings = make_settings(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    env = settings_env(settings)
    env["EMBEDSTREAM_KAFKA__BOOTSTRAP_TIMEOUT_MS"] = "1500"
    started = time.monotonic()
    result = embedstream("ingest", env=env)
    line = one_line_error(result)
    assert "no Kafka broker at 127.0.0.1:" in line and "embedstream broker start" in line
    assert "EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS" in line
    assert time.monotonic() - started < 30


def test_missing_model_says_how_to_build_it(make_settings, tmp_path):
    settings = make_settings()
    env = settings_env(settings)
    env["EMBEDSTREAM_MODEL__CACHE_DIR"] = str(tmp_path / "empty-cache")
    line = one_line_error(embedstream("search", "anything", env=env))
    assert "model 'minilm' is not built" in line and "embedstream models build minilm" in line


def test_locked_store_path_names_the_path(make_settings):
    settings = make_settings()
    holder = open_store(settings.qdrant)
    holder.ensure_spaces([SpaceSpec("minilm", 384, "minilm@1")])
    try:
        line = one_line_error(embedstream("search", "anything", env=settings_env(settings)))
        assert "in use by another process" in line and settings.qdrant.path in line
    finally:
        holder.close()


def test_broker_start_status_stop(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    port = free_port()
    started = embedstream("broker", "start", "--port", str(port), env=env)
    assert started.returncode == 0, started.stderr
    try:
        assert started.stdout.strip() == f"127.0.0.1:{port}" and port_open("127.0.0.1", port)
        status = embedstream("broker", "status", env=env)
        assert status.returncode == 0 and f"127.0.0.1:{port}" in status.stdout
        again = embedstream("broker", "start", "--port", str(port), env=env)
        assert again.returncode == 0 and "already running" in again.stderr
    finally:
        stopped = embedstream("broker", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not port_open("127.0.0.1", port)
    assert embedstream("broker", "status", env=env).returncode == 1
    assert not (Path(tmp_path) / "cache" / "embedstream" / "broker.json").exists()


def test_a_broker_started_with_s3_storage_keeps_its_topics_across_a_restart(tmp_path):
    s3 = S3Server(tmp_path)
    env = {**s3.env(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    port = free_port()
    settings = Settings.load(kafka={"bootstrap_servers": f"127.0.0.1:{port}", "topic": "kept", "partitions": 1})
    try:
        for attempt in range(2):
            started = embedstream("broker", "start", "--port", str(port), "--storage", s3.storage, env=env)
            assert started.returncode == 0, started.stderr
            if attempt == 0:
                ensure_topics(settings.kafka, ["kept"])
                send_raw(settings, [(b"k", text_event("k", "kept across a restart"), [])])
            else:
                assert [r.value for r in read_topic(settings, "kept")] == [text_event("k", "kept across a restart")]
            assert embedstream("broker", "stop", env=env).returncode == 0
        bad = embedstream("broker", "start", "--port", str(port), "--storage", "sqlite://x", env=env)
        assert "not supported: use memory or s3://BUCKET/" in one_line_error(bad)
    finally:
        embedstream("broker", "stop", env=env)
        s3.close()


def test_port_in_use_is_a_clear_error(broker, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    line = one_line_error(embedstream("broker", "start", "--port", str(broker.port), env=env))
    assert f"port {broker.port}" in line and "--port" in line


def test_import_word_vectors_then_list_and_info(tmp_path):
    vectors = tmp_path / "tiny.txt"
    vectors.write_text("3 4\ncat 1 0 0 0\ndog 0.9 0.1 0 0\ncar 0 0 1 0\n")
    env = dict(os.environ, EMBEDSTREAM_MODEL__CACHE_DIR=str(tmp_path / "cache"))
    imported = embedstream("models", "import-vectors", "tiny", "--file", str(vectors), env=env)
    assert imported.returncode == 0, imported.stderr
    assert "tiny@1: 4-d text model" in imported.stdout
    listed = embedstream("models", "list", env=env)
    assert "tiny@1" in listed.stdout and "minilm" in listed.stdout and "not built" in listed.stdout
    assert json.loads(embedstream("models", "info", "tiny", env=env).stdout)["inputs"] == [
        "input_ids",
        "attention_mask",
    ]


def test_models_list_shows_catalog_and_build_state(model_cache):
    env = dict(os.environ, EMBEDSTREAM_MODEL__CACHE_DIR=str(model_cache))
    listed = embedstream("models", "list", env=env)
    assert listed.returncode == 0 and "minilm@1 " in listed.stdout and "fp32, parity" in listed.stdout
    info = embedstream("models", "info", "minilm", env=env)
    assert json.loads(info.stdout)["dim"] == 384


def test_common_options_work_before_or_after_the_command() -> None:
    """`embedstream ingest --log-format json` (as manifests write it) means what `embedstream --log-format json
    ingest` means; neither leaks the option to Beam, and one given before the command is not reset after it."""
    from embedstream.workers.cli import parser

    for argv in (["--log-format", "json", "ingest"], ["ingest", "--log-format", "json"]):
        args, extra = parser().parse_known_args([*argv, "--mode", "stream", "--runner=PortableRunner"])
        assert (args.log_format, args.command, extra) == ("json", "ingest", ["--runner=PortableRunner"])
    args, _ = parser().parse_known_args(["-v", "--config", "a.toml", "serve", "--port", "9000"])
    assert (args.verbose, args.config, args.log_format) == (True, "a.toml", "text")


def test_every_command_gets_each_of_its_parameters_from_its_options() -> None:
    """Commands are typed functions called by parameter name: a renamed option or parameter fails here, not at a
    user's prompt."""
    import argparse
    import inspect

    from embedstream.workers.cli import parser

    subcommands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subcommands.choices) >= {"ingest", "serve", "search", "models", "dlq", "demo"}
    for name, sub in subcommands.choices.items():
        run = sub.get_default("run")
        options = {action.dest for action in sub._actions}
        needed = set(inspect.signature(run).parameters) - {"settings", "beam_args"}
        assert needed <= options, (name, needed - options)
